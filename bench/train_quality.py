"""Model quality: TabNet (a recipe) beside LightGBM on the same splits, over several seeds.

    python bench/train_quality.py --data creditcard.csv --split stratified --seeds 5
    python bench/train_quality.py --data creditcard.csv --preset seed
    python bench/train_quality.py                       # synthetic data (a smoke run)

Each repetition draws a new split (stratified 60/20/20 or time-ordered) and a new model
seed, trains TabNet with the chosen recipe (the project default unless ``--preset``) and
the LightGBM baseline on the same rows and features, chooses each threshold on validation,
and scores the test part with the served ONNX graph. Duplicates are dropped first. Prints a
table (mean ± sd) and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fraud_training import baseline, tabnet_model
from fraud_training.config import PRESETS, SplitMode, TrainingConfig
from fraud_training.data import drop_duplicates
from fraud_training.evaluation import choose_threshold, evaluate
from fraud_training.onnx_export import export_served_graph, onnx_probabilities
from fraud_training.prepare import prepare
from fraudlib.batch import BatchLimits, read_batch
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.synthetic import generate_transactions

METRICS = ("roc_auc", "auprc", "precision_at_80_recall", "recall_at_1pct_fpr", "train_s")


def load(path: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    if path is None:
        columns = generate_transactions(30_000, seed=0, fraud_rate=0.01)
        features = np.column_stack([columns[name] for name in FEATURE_COLUMNS])
        return features, columns["Class"].astype(np.int8), "synthetic (30,000 rows, 1 % fraud, seed 0)"
    with path.open("rb") as handle:
        batch = read_batch(handle, source=str(path), limits=BatchLimits(max_bytes=4 * 1024**3, max_rows=10**8))
    assert batch.labels is not None
    return batch.features, batch.labels, str(path)


def run_once(features: np.ndarray, labels: np.ndarray, config: TrainingConfig) -> dict[str, dict[str, float]]:
    prepared = prepare(features, labels, config)
    started = time.perf_counter()
    model = tabnet_model.train_tabnet(prepared.train_x, prepared.train_y, prepared.val_x, prepared.val_y, config)
    tabnet_s = time.perf_counter() - started
    onnx_bytes, _ = export_served_graph(model.network, prepared.preprocessor.n_outputs, prepared.test_x)
    threshold = choose_threshold(
        prepared.val_y, onnx_probabilities(onnx_bytes, prepared.val_x), config.threshold_policy, config.target_recall
    )
    tabnet = evaluate(prepared.test_y, onnx_probabilities(onnx_bytes, prepared.test_x), threshold, 0, config.seed)
    started = time.perf_counter()
    tree, _ = baseline.evaluate_lightgbm(config.with_changes({"bootstrap_rounds": 0}), prepared.arrays)
    tree_s = time.perf_counter() - started
    return {
        "tabnet": {**tabnet, "train_s": tabnet_s, "epochs": len(tabnet_model.epoch_history(model))},
        "lightgbm": {**tree, "train_s": tree_s},
    }


def summarise(runs: list[dict[str, dict[str, float]]], model: str) -> dict[str, tuple[float, float]]:
    summary = {}
    for metric in METRICS:
        values = [run[model][metric] for run in runs]
        summary[metric] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="the real creditcard.csv (default: synthetic)")
    parser.add_argument("--split", choices=[mode.value for mode in SplitMode], default="stratified")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe instead of the default")
    parser.add_argument("--max-epochs", type=int, help="override (for a quicker, rougher run)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--progress", action="store_true", help="log every TabNet epoch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.progress:
        logging.getLogger("fraud_training").setLevel(logging.INFO)

    features, labels, source = load(args.data)
    features, labels, duplicates = drop_duplicates(features, labels)
    config = TrainingConfig(split=SplitMode(args.split))
    if args.preset:
        config = config.with_changes(PRESETS[args.preset])
    if args.max_epochs:
        config = config.with_changes({"max_epochs": args.max_epochs})
    seeds = [1] if config.split is SplitMode.TIME else list(range(1, args.seeds + 1))
    print(f"data: {source}; {len(labels):,} rows after dropping {duplicates:,} duplicates; {int(labels.sum())} frauds")
    print(f"recipe: {args.preset or 'default'}; split: {config.split.value}; seeds: {seeds}")
    started = time.perf_counter()
    runs = []
    for seed in seeds:
        run = run_once(features, labels, config.with_changes({"seed": seed}))
        runs.append(run)
        print(
            f"  seed {seed}: TabNet AUPRC {run['tabnet']['auprc']:.4f} ROC-AUC {run['tabnet']['roc_auc']:.4f}"
            f" ({run['tabnet']['epochs']} epochs, {run['tabnet']['train_s']:.0f} s);"
            f" LightGBM AUPRC {run['lightgbm']['auprc']:.4f} ROC-AUC {run['lightgbm']['roc_auc']:.4f}",
            flush=True,
        )
    recipe = args.preset or "default"
    rows: list[tuple[str, dict[str, tuple[float, float]]]] = [
        (f"TabNet ({recipe})", summarise(runs, "tabnet")),
        ("LightGBM", summarise(runs, "lightgbm")),
    ]
    headers = ["model", "ROC-AUC", "AUPRC", "precision@80% recall", "recall@1% FPR", "train s"]
    lines = [
        [name]
        + [
            f"{mean:.4f} ± {sd:.4f}" if metric != "train_s" else f"{mean:.0f} ± {sd:.0f}"
            for metric, (mean, sd) in ((m, summary[m]) for m in METRICS)
        ]
        for name, summary in rows
    ]
    if args.markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        for line in [headers, *lines]:
            print("  ".join(cell.ljust(22) for cell in line))
    tabnet, tree = rows[0][1], rows[1][1]
    result: dict[str, Any] = {
        "recipe": recipe,
        "split": config.split.value,
        "seeds": len(seeds),
        "tabnet_roc_auc_mean": round(tabnet["roc_auc"][0], 4),
        "tabnet_auprc_mean": round(tabnet["auprc"][0], 4),
        "tabnet_p_at_r80_mean": round(tabnet["precision_at_80_recall"][0], 4),
        "lightgbm_auprc_mean": round(tree["auprc"][0], 4),
        "train_s_per_model": round(tabnet["train_s"][0], 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
