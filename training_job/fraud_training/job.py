"""One training run, start to finish.

data -> split -> undersample -> preprocess -> TabNet -> threshold -> evaluate (+ LightGBM
baseline) -> ONNX export with parity check -> champion gate -> MLflow run and registry ->
bundle in S3 (every file first) -> champion pointer (last, only when promoted).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from fraud_training import baseline, tabnet_model
from fraud_training.config import SAGEMAKER_INPUT_DIR, TrainingConfig
from fraud_training.data import Dataset, base_dataset_bytes, load_training_data
from fraud_training.evaluation import choose_threshold, evaluate
from fraud_training.gate import GateDecision, decide
from fraud_training.onnx_export import Precision, export_explain_graph, export_served_graph, onnx_probabilities
from fraud_training.prepare import PreparedData, prepare
from fraud_training.tracking import RunTracker, git_commit
from fraudlib.layout import (
    BASE_DATASET_KEY,
    EXPLAIN_ONNX_FILENAME,
    MANIFEST_FILENAME,
    ONNX_FILENAME,
    PREPROCESSING_FILENAME,
    REFERENCE_PROFILE_FILENAME,
    bundle_key,
)
from fraudlib.model import FraudModel
from fraudlib.pointer import ChampionPointer
from fraudlib.preprocessing import Preprocessor
from fraudlib.profile import build_reference_profile
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.store import ArtifactStore

log = logging.getLogger(__name__)
BUNDLE_FORMAT_VERSION = 1
MEDIUM_RISK_SHARE_OF_THRESHOLD = 0.5
"""``MEDIUM`` risk starts at half the decision threshold; ``HIGH`` at the threshold."""


@dataclass(frozen=True)
class TrainingOutcome:
    model_version: str
    promoted: bool
    reason: str
    metrics: dict[str, Any]
    baseline_metrics: dict[str, Any] | None
    run_id: str
    registered_version: str
    data_hash: str


def new_model_version(now: datetime, data_hash: str) -> str:
    return f"v{now:%Y%m%d-%H%M%S}-{data_hash[:8]}"


def _champion_auprc(
    artifacts: ArtifactStore, test_features: np.ndarray, test_labels: np.ndarray
) -> tuple[float | None, str | None]:
    """The served model's AUPRC on the new test rows, scored exactly as production scores."""
    pointer = artifacts.champion_pointer()
    if pointer is None:
        return None, None
    files = {
        name: artifacts.get_bytes(bundle_key(pointer.model_version, name))
        for name in (ONNX_FILENAME, PREPROCESSING_FILENAME, MANIFEST_FILENAME)
    }
    missing = [name for name, data in files.items() if data is None]
    if missing:
        log.warning("champion %s has no %s; it cannot be scored", pointer.model_version, ", ".join(missing))
        return None, pointer.model_version
    champion = FraudModel.from_bundle_files(
        files[ONNX_FILENAME],
        files[PREPROCESSING_FILENAME],
        files[MANIFEST_FILENAME],  # type: ignore[arg-type]
    )
    scores = champion.predict_proba(test_features)
    return float(average_precision_score(test_labels, scores)), pointer.model_version


MIN_GATE_FRAUDS = 10
"""The gate judges on the newest labelled batch's test rows when they hold this many frauds."""


def gate_rows(dataset: Dataset, test_rows: np.ndarray, test_labels: np.ndarray) -> tuple[np.ndarray, str]:
    """Which test rows the champion gate compares on, and why.

    The newest labelled data is what a new model must handle; its rows that fell in the test
    split are unseen by both models' training in this run. When they hold too few frauds
    for a stable AUPRC, the whole test split is used, and the reason says so.
    """
    everything = np.ones(test_labels.shape[0], dtype=bool)
    if len(dataset.sources) < 2:
        return everything, "the whole test split (no labelled batch since the base dataset)"
    newest = len(dataset.sources) - 1
    mask = dataset.origin[test_rows] == newest
    frauds = int(test_labels[mask].sum())
    name = dataset.sources[newest][0]
    if frauds < MIN_GATE_FRAUDS:
        return everything, (
            f"the whole test split (the newest batch {name} has {frauds} frauds among its test rows,"
            f" fewer than {MIN_GATE_FRAUDS})"
        )
    return mask, f"the test rows of the newest labelled batch {name} ({int(mask.sum())} rows, {frauds} frauds)"


def _importances(model: tabnet_model.TabNetEnsemble, preprocessor: Preprocessor) -> dict[str, float]:
    values = model.feature_importances
    return {name: float(value) for name, value in zip(preprocessor.output_names, values, strict=True)}


def run_training(
    config: TrainingConfig,
    *,
    s3: Any,
    artifacts: ArtifactStore,
    tracker: RunTracker,
    now: datetime | None = None,
) -> TrainingOutcome:
    """Train, evaluate, register and maybe promote one model. Raises on any failure, having
    changed nothing that is served (the pointer is written last, only on success)."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    channels = SAGEMAKER_INPUT_DIR if SAGEMAKER_INPUT_DIR.is_dir() else None
    dataset, new_base = load_training_data(s3, artifacts.bucket, config.data, channels)
    data_hash = dataset.content_hash()
    model_version = new_model_version(now, data_hash)
    log.info(
        "training %s on %s rows (%s frauds, %s duplicates dropped) from %d sources",
        model_version,
        f"{dataset.n_rows:,}",
        f"{dataset.n_frauds:,}",
        f"{dataset.duplicates_dropped:,}",
        len(dataset.sources),
    )
    prepared = prepare(dataset.features, dataset.labels, config)

    run_id = tracker.start(run_name=config.job_id or model_version)
    try:
        outcome = _train_and_publish(
            config=config,
            dataset=dataset,
            prepared=prepared,
            model_version=model_version,
            data_hash=data_hash,
            new_base=new_base,
            s3=s3,
            artifacts=artifacts,
            tracker=tracker,
            run_id=run_id,
            now=now,
        )
    except BaseException:
        tracker.end(status="FAILED")
        raise
    tracker.end()
    log.info("done in %.0f s: %s (%s)", time.monotonic() - started, model_version, outcome.reason)
    return outcome


def _log_run_inputs(
    tracker: RunTracker,
    config: TrainingConfig,
    *,
    dataset: Dataset,
    split_sizes: dict[str, int],
    model_version: str,
    data_hash: str,
    s3: Any,
) -> None:
    tracker.log_params({**config.as_params(), "model_version": model_version})
    tracker.set_tags(
        {
            "data_hash": data_hash,
            "git_commit": git_commit(),
            "trigger_uri": config.trigger_uri or "manual",
            "job_id": config.job_id or "manual",
        }
    )
    tracker.log_metrics(
        {
            "rows": dataset.n_rows,
            "frauds": dataset.n_frauds,
            "duplicates_dropped": dataset.duplicates_dropped,
            **{f"{name}_rows": size for name, size in split_sizes.items()},
        },
        prefix="data_",
    )
    if config.drift_report_uri.startswith("s3://"):
        bucket, _, key = config.drift_report_uri[len("s3://") :].partition("/")
        report = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        tracker.log_json(report, "trigger/drift_report.json")


def _calibration_record(model: tabnet_model.TabNetEnsemble) -> dict[str, Any]:
    """What the manifest says of the served probabilities' calibration."""
    if model.calibration is not None:
        return model.calibration.as_dict()
    return {"method": "none", "reason": model.calibration_skipped or "calibrate=false"}


def _teacher_metrics(
    model: tabnet_model.TabNetEnsemble, prepared: PreparedData, config: TrainingConfig
) -> dict[str, Any] | None:
    """For a distilled model, what its teacher (the members' mean, torch) scored on the same
    test rows, with its own threshold chosen on validation: the price or gain of
    distillation, on record. None when not distilled."""
    if model.student is None:
        return None
    threshold = choose_threshold(
        prepared.val_y, model.teacher_fraud_proba(prepared.val_x), config.threshold_policy, config.target_recall
    )
    return evaluate(prepared.test_y, model.teacher_fraud_proba(prepared.test_x), threshold, 0, config.seed)


def _baseline(
    config: TrainingConfig, tracker: RunTracker, arrays: tuple[np.ndarray, ...]
) -> tuple[dict[str, Any], np.ndarray]:
    metrics, scores = baseline.evaluate_lightgbm(config, arrays)
    tracker.log_metrics(metrics, prefix="baseline_lightgbm_test_")
    return metrics, scores


def _train_and_publish(
    *,
    config: TrainingConfig,
    dataset: Dataset,
    prepared: PreparedData,
    model_version: str,
    data_hash: str,
    new_base: Any,
    s3: Any,
    artifacts: ArtifactStore,
    tracker: RunTracker,
    run_id: str,
    now: datetime,
) -> TrainingOutcome:
    val_x, val_y, test_x, test_y = prepared.val_x, prepared.val_y, prepared.test_x, prepared.test_y
    preprocessor, raw_train, raw_test = prepared.preprocessor, prepared.raw_train, prepared.raw_test
    split_sizes, test_rows, arrays = prepared.sizes, prepared.test_rows, prepared.arrays
    _log_run_inputs(
        tracker,
        config,
        dataset=dataset,
        split_sizes=split_sizes,
        model_version=model_version,
        data_hash=data_hash,
        s3=s3,
    )
    model = tabnet_model.train_tabnet(prepared, config)
    tracker.log_history(model.epoch_history())
    pretraining = model.pretraining.as_dict() if model.pretraining is not None else None
    if pretraining is not None:
        tracker.log_metrics(pretraining, prefix="pretraining_")
    calibration = _calibration_record(model)
    tracker.log_metrics(calibration, prefix="calibration_")
    # Export first, prove the graph equals the network, then evaluate what will be served.
    onnx_bytes, parity = export_served_graph(model.network, preprocessor.n_outputs, test_x)
    test_scores = onnx_probabilities(onnx_bytes, test_x)
    parity["float32_torch_max_abs_diff"] = float(np.max(np.abs(test_scores - model.predict_fraud_proba(test_x))))
    explain_bytes, parity["explain_max_abs_diff"], explain_precision = export_explain_graph(
        model.network, preprocessor.n_outputs, test_x[:1000], Precision(parity["precision"])
    )
    parity["explain_precision"] = str(explain_precision)
    tracker.log_metrics({"onnx_max_abs_diff": parity["max_abs_diff"]})
    val_scores = onnx_probabilities(onnx_bytes, val_x)
    threshold = choose_threshold(val_y, val_scores, config.threshold_policy, config.target_recall)
    metrics = evaluate(test_y, test_scores, threshold, config.bootstrap_rounds, config.seed)
    tracker.log_metrics(metrics, prefix="test_")
    teacher_metrics = _teacher_metrics(model, prepared, config)
    if teacher_metrics is not None:
        tracker.log_metrics(teacher_metrics, prefix="teacher_test_")

    baseline_metrics, baseline_scores = _baseline(config, tracker, arrays) if config.baseline else (None, None)

    importances = _importances(model, preprocessor)
    tracker.log_plots(test_y, test_scores, baseline_scores, metrics, importances)

    on_rows, rows_reason = gate_rows(dataset, test_rows, test_y)
    gate_metrics = {**metrics, "auprc": float(average_precision_score(test_y[on_rows], test_scores[on_rows]))}
    champion_auprc, champion_version = _champion_auprc(artifacts, raw_test[on_rows], test_y[on_rows])
    decision: GateDecision = decide(gate_metrics, config, champion_auprc, champion_version, rows_reason)
    tracker.log_metrics({"promoted": int(decision.promote)})
    tracker.set_tags({"gate_reason": decision.reason})
    registered_version = tracker.register(onnx_bytes, config.registered_model_name)

    manifest = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "model_version": model_version,
        "created_at": now.isoformat(timespec="seconds"),
        "data_hash": data_hash,
        "data_sources": [{"name": name, "rows": rows} for name, rows in dataset.sources],
        "rows": dataset.n_rows,
        "split": {"mode": config.split.value, **split_sizes},
        "threshold": threshold,
        "threshold_policy": config.threshold_policy.value,
        "risk_cutoffs": {"medium": threshold * MEDIUM_RISK_SHARE_OF_THRESHOLD, "high": threshold},
        "input_names": list(preprocessor.output_names),
        "raw_columns": list(FEATURE_COLUMNS),
        "metrics": metrics,
        "baseline_lightgbm_metrics": baseline_metrics,
        "feature_importances": importances,
        "calibration": calibration,
        "ensemble": {
            "members": len(model.members),
            "epochs": model.epochs,
            "distilled": model.student is not None,
            "student_epochs": model.student_epochs,
            "student_rows": model.student_rows,
            "teacher_metrics": teacher_metrics,
            "pretraining": pretraining,
        },
        "onnx": parity,
        "gate": {
            "promoted": decision.promote,
            "reason": decision.reason,
            "champion_version": decision.champion_version,
            "champion_auprc": decision.champion_auprc,
        },
        "mlflow": {
            "tracking_uri": tracker.tracking_uri,
            "run_id": run_id,
            "registered_model": config.registered_model_name,
            "version": registered_version,
        },
        "training": config.as_params(),
    }
    profile = build_reference_profile(
        {name: raw_train[:, i] for i, name in enumerate(FEATURE_COLUMNS)},
        model_version=model_version,
        data_hash=data_hash,
        seed=config.seed,
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            ONNX_FILENAME: onnx_bytes,
            EXPLAIN_ONNX_FILENAME: explain_bytes,
            **model.save(Path(tmp)),
            PREPROCESSING_FILENAME: json.dumps(preprocessor.to_dict(), indent=2).encode(),
            REFERENCE_PROFILE_FILENAME: profile.to_bytes(),
            MANIFEST_FILENAME: json.dumps(manifest, indent=2, allow_nan=False).encode(),
        }
    if new_base is not None:
        artifacts.put_bytes(BASE_DATASET_KEY, base_dataset_bytes(new_base), "application/gzip")
    # Every file of the bundle first, the manifest last of them; then, only when promoted,
    # the pointer: a reader following the pointer never finds half a bundle.
    for name, data in files.items():
        artifacts.put_bytes(bundle_key(model_version, name), data)
    if config.output_dir:
        output = Path(config.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (output / name).write_bytes(data)
    if decision.promote:
        artifacts.put_champion_pointer(ChampionPointer.for_version(model_version, now.isoformat(timespec="seconds")))
        tracker.set_champion(config.registered_model_name, registered_version)
    log.info("gate: %s", decision.reason)
    return TrainingOutcome(
        model_version=model_version,
        promoted=decision.promote,
        reason=decision.reason,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        run_id=run_id,
        registered_version=registered_version,
        data_hash=data_hash,
    )
