"""The drift use case: one incoming batch in, a report (or a quarantine) out, training on drift.

Knows nothing of Lambda events: the drift handler decodes the event and calls
:meth:`BatchIngestor.process`; the embedded stack and the tests call the same handler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from fraudlib import aws
from fraudlib.batch import BatchLimits, BatchValidationError, read_batch
from fraudlib.config import DriftSettings, TrainingBackend
from fraudlib.coordination import BatchRef, TrainingCoordinator
from fraudlib.drift import DriftConfig, DriftResult, KSDriftDetector
from fraudlib.launcher import DockerLauncher, LocalProcessLauncher, SageMakerLauncher, TrainingLauncher
from fraudlib.layout import batch_record_key, drift_report_key, is_batch_key, quarantine_key
from fraudlib.profile import ReferenceProfile
from fraudlib.report import batch_record, drift_report, quarantine_report
from fraudlib.retraining import LaunchOutcome, RetrainingScheduler
from fraudlib.store import ArtifactStore, IncomingStore, ObjectChangedError, ObjectGoneError


class IngestStatus(StrEnum):
    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one batch; the handler turns it into logs and metrics."""

    status: IngestStatus
    batch_ref: BatchRef
    reason: str = ""
    rows: int = 0
    report_key: str | None = None
    drift: DriftResult | None = None
    launch: LaunchOutcome | None = None
    error_code: str | None = None
    duration_s: float = 0.0


class WrongBucketError(ValueError):
    """An event names a bucket this function is not configured for."""


class BatchIngestor:
    """Validate, test and record incoming batches.

    Parameters
    ----------
    incoming, artifacts : stores of the two buckets
    scheduler : starts training on drift
    drift_config : the drift rule
    limits : file size and row limits
    """

    def __init__(
        self,
        incoming: IncomingStore,
        artifacts: ArtifactStore,
        scheduler: RetrainingScheduler,
        drift_config: DriftConfig,
        limits: BatchLimits,
    ) -> None:
        self._incoming = incoming
        self._artifacts = artifacts
        self._scheduler = scheduler
        self._drift_config = drift_config
        self._limits = limits
        self._detector: KSDriftDetector | None = None
        self._detector_profile_key: str | None = None

    def _current_detector(self) -> tuple[KSDriftDetector | None, str | None]:
        # The pointer is read per batch (one small GET); the profile only when it changed.
        pointer = self._artifacts.champion_pointer()
        if pointer is None:
            return None, None
        if pointer.reference_profile_key != self._detector_profile_key:
            profile = self._artifacts.reference_profile(pointer.reference_profile_key)
            self._detector = KSDriftDetector(profile, self._drift_config)
            self._detector_profile_key = pointer.reference_profile_key
        return self._detector, self._detector_profile_key

    def process(self, bucket: str, key: str, etag: str) -> IngestOutcome:
        """Handle one S3 ``ObjectCreated`` notification.

        Raises only for failures worth a retry (AWS errors, a failed launch); a bad file is
        an outcome (quarantined), not an exception.
        """
        started = time.perf_counter()
        batch_ref = BatchRef(bucket=bucket, key=key, etag=etag)
        if bucket != self._incoming.bucket:
            raise WrongBucketError(f"event for bucket {bucket!r}; this function reads {self._incoming.bucket!r}")
        if not is_batch_key(key):
            return IngestOutcome(IngestStatus.SKIPPED, batch_ref, reason="not an incoming/*.csv[.gz] key")
        try:
            opened = self._incoming.open_batch(key, etag)
        except (ObjectGoneError, ObjectChangedError) as exc:
            return IngestOutcome(IngestStatus.SKIPPED, batch_ref, reason=str(exc))
        try:
            with opened.body:
                batch = read_batch(opened.body, source=key, limits=self._limits)
        except BatchValidationError as error:
            return self._quarantine(batch_ref, opened.size_bytes, error, started)
        parsed = time.perf_counter()

        detector, profile_key = self._current_detector()
        result = detector.detect(batch) if detector is not None else None
        tested = time.perf_counter()
        profile: ReferenceProfile | None = detector.profile if detector is not None else None
        report_key = drift_report_key(key, etag)
        timings = {"read_validate": parsed - started, "ks": tested - parsed, "total": tested - started}
        report = drift_report(
            batch_ref=batch_ref,
            batch=batch,
            result=result,
            profile=profile,
            profile_key=profile_key,
            timings_s=timings,
        )
        self._artifacts.put_json(report_key, report)
        self._artifacts.put_json(
            batch_record_key(key, etag),
            batch_record(batch_ref=batch_ref, batch=batch, report_key=report_key, status=report["status"]),
        )
        launch = None
        if result is not None and result.drifted:
            launch = self._scheduler.request(batch_ref, report_key)
            report["retraining"] = {
                "status": launch.status.value,
                "job_id": launch.job_id,
                "record": launch.record_key,
            }
            self._artifacts.put_json(report_key, report)
        return IngestOutcome(
            IngestStatus.ACCEPTED,
            batch_ref,
            rows=batch.n_rows,
            report_key=report_key,
            drift=result,
            launch=launch,
            duration_s=time.perf_counter() - started,
        )

    def _quarantine(
        self, batch_ref: BatchRef, size_bytes: int, error: BatchValidationError, started: float
    ) -> IngestOutcome:
        _, report_key = self._incoming.quarantine(
            batch_ref.key,
            batch_ref.etag,
            quarantine_report(
                batch_ref=batch_ref,
                size_bytes=size_bytes,
                error=error,
                quarantine_uri=f"s3://{self._incoming.bucket}/{quarantine_key(batch_ref.key)}",
            ),
        )
        return IngestOutcome(
            IngestStatus.QUARANTINED,
            batch_ref,
            reason=error.message,
            report_key=report_key,
            error_code=error.code,
            duration_s=time.perf_counter() - started,
        )


def build_ingestor(settings: DriftSettings) -> BatchIngestor:
    """Wire the drift use case to AWS (or to whatever ``AWS_ENDPOINT_URL`` names)."""
    s3 = aws.client("s3")
    artifacts = ArtifactStore(s3, settings.artifacts_bucket)
    coordinator = TrainingCoordinator(aws.client("dynamodb"), settings.lock_table, settings.lock_ttl_s)
    launcher: TrainingLauncher
    if settings.backend is TrainingBackend.SAGEMAKER:
        assert settings.sagemaker is not None
        launcher = SageMakerLauncher(aws.client("sagemaker"), settings.sagemaker)
    elif settings.backend is TrainingBackend.DOCKER:
        assert settings.docker is not None
        launcher = DockerLauncher(settings.docker)
    else:
        assert settings.local is not None
        launcher = LocalProcessLauncher(settings.local)
    scheduler = RetrainingScheduler(
        coordinator,
        launcher,
        artifacts,
        incoming_bucket=settings.incoming_bucket,
        lock_table=settings.lock_table,
        mlflow_tracking_uri=settings.mlflow_tracking_uri,
    )
    if isinstance(launcher, (LocalProcessLauncher, DockerLauncher)):
        launcher.on_exit = scheduler.job_finished
    return BatchIngestor(
        IncomingStore(s3, settings.incoming_bucket), artifacts, scheduler, settings.drift, settings.limits
    )
