"""Model quality: TabNet recipes beside XGBoost and LightGBM on the same splits, over several seeds.

    python bench/train_quality.py --data creditcard.csv                 # the whole protocol
    python bench/train_quality.py --data creditcard.csv --recipes default --no-time-split
    python bench/train_quality.py                                       # synthetic data (a smoke run)

The protocol (the model-quality issue): duplicates dropped; ``--seeds`` repetitions, each a
new stratified 60/20/20 split and a new model seed; in each, every TabNet recipe (``seed``:
the seed project's balanced undersampling; ``default``: the training job's defaults) and the
two tree baselines are trained on that split's training part and scored on its test part.
TabNet is scored through the ONNX graph the scoring function would serve; its threshold (and
each tree's) is chosen on validation. A distilled recipe (the default) is shown twice: the
network served, and its teacher (the members' mean, as one graph; the members' training time).
The trees train on every training row with the same preprocessing, early-stopped on validation
AUPRC. Then one time-ordered split (first 60 % by ``Time`` / next 20 % / last 20 %) for the
default recipe and LightGBM: the honest protocol for a drifting stream.

Prints a table per protocol (mean ± sd) and, last, one JSON object; ``--output`` also writes
that object to a file (``bench/results/train_quality.json`` is the committed run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fraud_training import baseline, tabnet_model
from fraud_training.config import PRESETS, SplitMode, TrainingConfig, parse_settings
from fraud_training.data import drop_duplicates
from fraud_training.evaluation import choose_threshold, evaluate
from fraud_training.onnx_export import export_served_graph, onnx_probabilities
from fraud_training.prepare import PreparedData, prepare
from fraudlib.batch import BatchLimits, read_batch
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.synthetic import generate_transactions

METRICS = ("roc_auc", "auprc", "precision_at_80_recall", "recall_at_1pct_fpr", "brier_score", "train_s")
HEADERS = ("model", "ROC-AUC", "AUPRC", "precision@80% recall", "recall@1% FPR", "Brier ×10⁴", "train s")
RECIPES = ("seed", "default")
TEACHER_SUFFIX = ", its members' mean"
XGBOOST_ROUNDS = 2000
XGBOOST_EARLY_STOPPING_ROUNDS = 100

Scores = dict[str, float]


def load(path: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    if path is None:
        columns = generate_transactions(30_000, seed=0, fraud_rate=0.01)
        features = np.column_stack([columns[name] for name in FEATURE_COLUMNS])
        return features, columns["Class"].astype(np.int8), "synthetic (30,000 rows, 1 % fraud, seed 0)"
    with path.open("rb") as handle:
        batch = read_batch(handle, source=str(path), limits=BatchLimits(max_bytes=4 * 1024**3, max_rows=10**8))
    assert batch.labels is not None
    return batch.features, batch.labels, str(path)


def recipe_config(
    recipe: str, split: SplitMode, seed: int, max_epochs: int | None, default_changes: dict[str, Any] | None = None
) -> TrainingConfig:
    """The recipe's training settings for one split; ``default_changes`` (``--set``) alter the
    default recipe only, so a lever can be screened against the seed preset and the trees."""
    config = TrainingConfig(split=split, seed=seed)
    if recipe != "default":
        config = config.with_changes(PRESETS[recipe])
    elif default_changes:
        config = config.with_changes(default_changes)
    if max_epochs:
        config = config.with_changes({"max_epochs": max_epochs})
    return config


def _served_scores(model: tabnet_model.TabNetEnsemble, prepared: PreparedData, config: TrainingConfig) -> Scores:
    """Test metrics of the graph the scoring function would serve for ``model``."""
    onnx_bytes, _ = export_served_graph(model.network, prepared.preprocessor.n_outputs, prepared.test_x)
    threshold = choose_threshold(
        prepared.val_y, onnx_probabilities(onnx_bytes, prepared.val_x), config.threshold_policy, config.target_recall
    )
    scores = evaluate(prepared.test_y, onnx_probabilities(onnx_bytes, prepared.test_x), threshold, 0, config.seed)
    # The same network without its calibration, for the record of what calibration changed.
    raw = dataclasses.replace(model, calibration=None).predict_fraud_proba(prepared.test_x)
    scores["brier_score_uncalibrated"] = float(np.mean((raw - prepared.test_y) ** 2))
    scores["mean_fraud_probability_uncalibrated"] = float(np.mean(raw))
    return scores


def score_tabnet(prepared: PreparedData, config: TrainingConfig, name: str) -> dict[str, Scores]:
    """The recipe's served model under ``name``; for a distilled recipe also its teacher
    (the members' mean, served as one graph) under ``name + TEACHER_SUFFIX``, with the
    members' training time only."""
    started = time.perf_counter()
    # The job's train_tabnet, in its two steps, to time and score the teacher on its own.
    teacher = tabnet_model.train_tabnet(prepared, config.with_changes({"distill": False}))
    teacher_s = time.perf_counter() - started
    served, teacher_scores = teacher, None
    if config.distill and len(teacher.members) > 1:
        student, rows = tabnet_model.distil(teacher, prepared, config)
        served = dataclasses.replace(teacher, student=student, student_rows=rows)
        if config.calibrate:  # the teacher's calibration was fitted to the members' mean
            served = tabnet_model.calibrate(served, prepared)
        teacher_scores = {
            **_served_scores(teacher, prepared, config),
            "train_s": teacher_s,
            "epochs": float(sum(teacher.epochs)),
        }
    train_s = time.perf_counter() - started
    results = {
        name: {
            **_served_scores(served, prepared, config),
            "train_s": train_s,
            "epochs": float(sum(served.epochs) + served.student_epochs),
        }
    }
    if teacher_scores is not None:
        results[name + TEACHER_SUFFIX] = teacher_scores
    return results


def _xgboost_scores(arrays: tuple[np.ndarray, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    import xgboost  # the benchmark's only use of it: the training job's baseline is LightGBM

    train_x, train_y, val_x, val_y, test_x, _ = arrays
    model = xgboost.XGBClassifier(
        n_estimators=XGBOOST_ROUNDS,
        learning_rate=0.05,
        max_depth=6,
        subsample=0.8,
        colsample_bytree=0.8,
        tree_method="hist",
        eval_metric="aucpr",
        early_stopping_rounds=XGBOOST_EARLY_STOPPING_ROUNDS,
        n_jobs=2,
        random_state=seed,
    )
    model.fit(train_x, train_y, eval_set=[(val_x, val_y)], verbose=False)
    return model.predict_proba(val_x)[:, 1], model.predict_proba(test_x)[:, 1]


def _lightgbm_scores(arrays: tuple[np.ndarray, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    train_x, train_y, val_x, val_y, test_x, _ = arrays
    model = baseline.train_lightgbm(train_x, train_y, val_x, val_y, seed)
    return baseline.predict_fraud_proba(model, val_x), baseline.predict_fraud_proba(model, test_x)


TREES: dict[str, Callable[[tuple[np.ndarray, ...], int], tuple[np.ndarray, np.ndarray]]] = {
    "XGBoost": _xgboost_scores,
    "LightGBM": _lightgbm_scores,
}


def score_tree(name: str, every_row: PreparedData, config: TrainingConfig) -> Scores:
    started = time.perf_counter()
    val_scores, test_scores = TREES[name](every_row.arrays, config.seed)
    train_s = time.perf_counter() - started
    threshold = choose_threshold(every_row.val_y, val_scores, config.threshold_policy, config.target_recall)
    return {**evaluate(every_row.test_y, test_scores, threshold, 0, config.seed), "train_s": train_s}


def run_split(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    split: SplitMode,
    seed: int,
    recipes: list[str],
    trees: list[str],
    max_epochs: int | None,
    default_changes: dict[str, Any] | None = None,
) -> dict[str, Scores]:
    """Every model on one split: ``{"TabNet (recipe)": scores, "XGBoost": scores, ...}``."""
    results: dict[str, Scores] = {}
    for recipe in recipes:
        config = recipe_config(recipe, split, seed, max_epochs, default_changes)
        results.update(score_tabnet(prepare(features, labels, config), config, f"TabNet ({recipe})"))
    every_row_config = TrainingConfig(split=split, seed=seed, undersample_ratio=None)
    every_row = prepare(features, labels, every_row_config)
    for name in trees:
        results[name] = score_tree(name, every_row, every_row_config)
    return results


def summarise(runs: list[dict[str, Scores]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Model -> metric -> (mean, sd) over the runs."""
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    for model in runs[0]:
        summary[model] = {}
        for metric in METRICS:
            values = [run[model][metric] for run in runs]
            summary[model][metric] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return summary


def calibration_summary(runs: list[dict[str, Scores]], model: str) -> dict[str, float]:
    """Mean over the runs of what calibration changed for ``model``: Brier score and mean
    probability, served (calibrated) and without the calibration, beside the fraud rate."""

    def mean_of(metric: str) -> float:
        return round(statistics.fmean(run[model][metric] for run in runs), 7)

    return {
        "tabnet_brier_mean": mean_of("brier_score"),
        "tabnet_brier_uncalibrated_mean": mean_of("brier_score_uncalibrated"),
        "tabnet_mean_probability_mean": mean_of("mean_fraud_probability"),
        "tabnet_mean_probability_uncalibrated_mean": mean_of("mean_fraud_probability_uncalibrated"),
        "test_fraud_rate_mean": mean_of("fraud_rate"),
    }


def markdown_table(summary: dict[str, dict[str, tuple[float, float]]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for model, metrics in summary.items():
        cells = [
            f"{mean:.0f} ± {sd:.0f}"
            if metric == "train_s"
            else f"{mean * 1e4:.2f} ± {sd * 1e4:.2f}"
            if metric == "brier_score"
            else f"{mean:.4f} ± {sd:.4f}"
            for metric, (mean, sd) in metrics.items()
        ]
        lines.append("| " + " | ".join([model, *cells]) + " |")
    return "\n".join(lines)


def one_line(split: SplitMode, seed: int, results: dict[str, Scores]) -> str:
    parts = [
        f"{model} AUPRC {scores['auprc']:.4f} ROC-AUC {scores['roc_auc']:.4f} ({scores['train_s']:.0f} s"
        + (f", {scores['epochs']:.0f} epochs)" if "epochs" in scores else ")")
        for model, scores in results.items()
    ]
    return f"  {split.value} seed {seed}: " + "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="the real creditcard.csv (default: synthetic)")
    parser.add_argument("--seeds", type=int, default=5, help="stratified repetitions (default 5)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="TabNet recipes, comma separated")
    parser.add_argument("--trees", default=",".join(TREES), help="tree baselines, comma separated")
    parser.add_argument("--no-time-split", action="store_true", help="skip the time-ordered split")
    parser.add_argument("--max-epochs", type=int, help="override (for a quicker, rougher run)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a setting of the default recipe (a lever to screen), e.g. --set pretrain_max_epochs=10",
    )
    parser.add_argument("--first-seed", type=int, default=1, help="seed of the first stratified split (default 1)")
    parser.add_argument("--output", type=Path, help="also write the last line's JSON here")
    parser.add_argument("--progress", action="store_true", help="log every TabNet epoch")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.progress:
        logging.getLogger("fraud_training").setLevel(logging.INFO)
    recipes = [name for name in args.recipes.split(",") if name]
    trees = [name for name in args.trees.split(",") if name]
    unknown = [name for name in recipes if name not in RECIPES and name not in PRESETS] + [
        name for name in trees if name not in TREES
    ]
    if unknown or "default" not in recipes:
        parser.error(f"unknown recipes or trees: {unknown}" if unknown else "--recipes must include default")
    if any("=" not in item for item in args.set):
        parser.error("--set takes NAME=VALUE")
    default_changes = parse_settings(dict(item.split("=", 1) for item in args.set), "--set")
    seeds = range(args.first_seed, args.first_seed + args.seeds)

    features, labels, source = load(args.data)
    features, labels, duplicates = drop_duplicates(features, labels)
    print(f"data: {source}; {len(labels):,} rows after dropping {duplicates:,} duplicates; {int(labels.sum())} frauds")
    print(f"recipes: {', '.join(recipes)}; trees: {', '.join(trees)}; stratified seeds {seeds[0]}..{seeds[-1]}")
    if default_changes:
        print(f"default recipe changed: {default_changes}", flush=True)
    started = time.perf_counter()
    stratified = []
    for seed in seeds:
        stratified.append(
            run_split(
                features,
                labels,
                split=SplitMode.STRATIFIED,
                seed=seed,
                recipes=recipes,
                trees=trees,
                max_epochs=args.max_epochs,
                default_changes=default_changes,
            )
        )
        print(one_line(SplitMode.STRATIFIED, seed, stratified[-1]), flush=True)
    summary = summarise(stratified)
    print(f"\nStratified 60/20/20, {args.seeds} splits and model seeds (mean ± sd):\n")
    print(markdown_table(summary))

    time_split: dict[str, Scores] = {}
    if not args.no_time_split:
        time_split = run_split(
            features,
            labels,
            split=SplitMode.TIME,
            seed=1,
            recipes=["default"],
            trees=[name for name in trees if name == "LightGBM"],
            max_epochs=args.max_epochs,
            default_changes=default_changes,
        )
        print(one_line(SplitMode.TIME, 1, time_split))
        print("\nTime-ordered 60/20/20 (train on the past, test on the last 20 % by Time):\n")
        print(markdown_table(summarise([time_split])))

    def mean(model: str, metric: str) -> float | None:
        return round(summary[model][metric][0], 4) if model in summary else None

    def on_time_split(model: str) -> float | None:
        return round(time_split[model]["auprc"], 4) if model in time_split else None

    result: dict[str, Any] = {
        "tabnet_roc_auc_mean": mean("TabNet (default)", "roc_auc"),
        "tabnet_auprc_mean": mean("TabNet (default)", "auprc"),
        "xgb_auprc_mean": mean("XGBoost", "auprc"),
        "tabnet_p_at_r80_mean": mean("TabNet (default)", "precision_at_80_recall"),
        "time_split_tabnet_auprc": on_time_split("TabNet (default)"),
        "seed_preset_auprc_mean": mean("TabNet (seed)", "auprc"),
        "teacher_auprc_mean": mean("TabNet (default)" + TEACHER_SUFFIX, "auprc"),
        "teacher_roc_auc_mean": mean("TabNet (default)" + TEACHER_SUFFIX, "roc_auc"),
        "train_s_per_model": round(summary["TabNet (default)"]["train_s"][0], 1),
        "xgb_roc_auc_mean": mean("XGBoost", "roc_auc"),
        **calibration_summary(stratified, "TabNet (default)"),
        "lightgbm_auprc_mean": mean("LightGBM", "auprc"),
        "time_split_lightgbm_auprc": on_time_split("LightGBM"),
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "default_recipe_changes": default_changes or None,
        "data": source,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    line = json.dumps(result)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
