"""The training container's entrypoint.

Runs the same way under SageMaker (hyperparameters in /opt/ml/input/config/, the bundle
also copied to /opt/ml/model), under ``docker run`` (CLI flags, ``TRAIN_*`` variables) and
as the ``local`` launcher's subprocess (flags ``--job-id``, ``--trigger-uri``,
``--drift-report-uri``). Needs ``ARTIFACTS_BUCKET``; ``LOCK_TABLE`` when launched by the
drift function, to release the training lock.

Exit status 0: a model was trained and registered (promoted or not, the record says).
Non-zero: nothing served changed; the launch record says ``failed`` and why.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from fraud_training.config import SAGEMAKER_MODEL_DIR, ConfigError, TrainingConfig, load_config
from fraud_training.job import run_training
from fraud_training.tracking import RunTracker, default_tracking_uri
from fraudlib import aws
from fraudlib.coordination import TrainingCoordinator
from fraudlib.layout import launch_record_key
from fraudlib.store import ArtifactStore

log = logging.getLogger("training_job")
DEFAULT_STATE_DIR = Path(".stack")
LOCK_TTL_S = 24 * 3600  # only used to construct the coordinator; releasing ignores it


def _record_outcome(artifacts: ArtifactStore, job_id: str, fields: dict[str, object]) -> None:
    key = launch_record_key(job_id)
    record = artifacts.get_json(key) or {"job_id": job_id, "backend": "manual"}
    record.update(fields, finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
    artifacts.put_json(key, record)


def _release_lock(job_id: str) -> None:
    table = os.environ.get("LOCK_TABLE", "")
    if table and job_id:
        released = TrainingCoordinator(aws.client("dynamodb"), table, LOCK_TTL_S).release_lock(job_id)
        log.info("training lock %s", "released" if released else "was not held by this job")


def _tracker(config: TrainingConfig) -> RunTracker:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    state_dir = Path(os.environ.get("FRAUD_STATE_DIR", "") or DEFAULT_STATE_DIR)
    if uri:
        return RunTracker(uri)
    return RunTracker(default_tracking_uri(state_dir), artifact_root=state_dir / "mlartifacts")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("TRAINING_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    for noisy in ("botocore", "urllib3", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # SageMaker starts training images as `<image> train`
        argv = argv[1:]
    try:
        config = load_config(argv, os.environ)
    except ConfigError as exc:
        log.error("bad settings: %s", exc)
        return 2
    except SystemExit as exc:  # argparse: --help (0) or a bad flag (2, already explained)
        return int(exc.code or 0)
    if not config.output_dir and SAGEMAKER_MODEL_DIR.parent.exists():
        config = config.with_changes({"output_dir": str(SAGEMAKER_MODEL_DIR)})
    if not config.job_id:
        config = config.with_changes({"job_id": f"manual-{datetime.now(UTC):%Y%m%d-%H%M%S}"})
    bucket = os.environ.get("ARTIFACTS_BUCKET", "")
    if not bucket:
        log.error("environment variable ARTIFACTS_BUCKET is required and is not set")
        return 2
    s3 = aws.client("s3")
    artifacts = ArtifactStore(s3, bucket)
    try:
        outcome = run_training(config, s3=s3, artifacts=artifacts, tracker=_tracker(config))
    except Exception as exc:
        log.error("training job %s failed: %s: %s", config.job_id, type(exc).__name__, exc)
        log.debug("%s", traceback.format_exc())
        try:
            _record_outcome(artifacts, config.job_id, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        finally:
            _release_lock(config.job_id)
        return 1
    _record_outcome(
        artifacts,
        config.job_id,
        {
            "status": "succeeded",
            "model_version": outcome.model_version,
            "promoted": outcome.promoted,
            "gate_reason": outcome.reason,
            "mlflow_run_id": outcome.run_id,
            "registered_version": outcome.registered_version,
            "test_auprc": outcome.metrics["auprc"],
            "test_roc_auc": outcome.metrics["roc_auc"],
        },
    )
    _release_lock(config.job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
