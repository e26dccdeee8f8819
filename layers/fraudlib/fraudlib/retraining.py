"""Turn a drifted batch into at most one training job.

Order of operations, and why:

1. claim the batch version (idempotency: SQS delivers at least once);
2. take the training lock (one job at a time); if it is held, record the batch as pending
   (a later job picks pending batches up) and stop;
3. start the job; if starting fails, release the lock and the claim and raise, so that the
   message is retried;
4. write the launch record and settle the claim.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from fraudlib.coordination import BatchRef, ClaimState, TrainingCoordinator
from fraudlib.launcher import TrainingLauncher, TrainingRequest, new_job_id
from fraudlib.layout import launch_record_key, pending_record_key
from fraudlib.store import ArtifactStore


class LaunchStatus(StrEnum):
    STARTED = "started"
    PENDING = "pending"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class LaunchOutcome:
    status: LaunchStatus
    job_id: str | None
    record_key: str | None


def _iso(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


class RetrainingScheduler:
    """Starts training for drifted batches, exactly once per batch and one job at a time."""

    def __init__(
        self,
        coordinator: TrainingCoordinator,
        launcher: TrainingLauncher,
        artifacts: ArtifactStore,
        *,
        incoming_bucket: str,
        lock_table: str,
        mlflow_tracking_uri: str = "",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._coordinator = coordinator
        self._launcher = launcher
        self._artifacts = artifacts
        self._incoming_bucket = incoming_bucket
        self._lock_table = lock_table
        self._mlflow_tracking_uri = mlflow_tracking_uri
        self._now = now
        # A local job can end before its launch record is written; its exit hook waits on
        # this lock so that it always updates the record, never gets overwritten by it.
        self._record_lock = threading.Lock()

    def request(self, batch_ref: BatchRef, drift_report_key: str) -> LaunchOutcome:
        """Ask for a training job because ``batch_ref`` drifted."""
        if not self._coordinator.claim_batch(batch_ref):
            # A redelivery: report the job the first delivery started, start nothing.
            claim = self._coordinator.claim_of(batch_ref) or {}
            job_id = claim.get("job_id") or None
            return LaunchOutcome(LaunchStatus.DUPLICATE, job_id, launch_record_key(job_id) if job_id else None)
        try:
            return self._launch_claimed(batch_ref, drift_report_key)
        except BaseException:
            self._coordinator.release_claim(batch_ref)
            raise

    def _launch_claimed(self, batch_ref: BatchRef, drift_report_key: str) -> LaunchOutcome:
        now = self._now()
        job_id = new_job_id(now)
        report_uri = self._artifacts.uri(drift_report_key)
        if not self._coordinator.acquire_lock(job_id):
            holder = self._coordinator.lock_holder()
            key = pending_record_key(batch_ref.key, batch_ref.etag)
            self._artifacts.put_json(
                key,
                {
                    "status": LaunchStatus.PENDING.value,
                    "recorded_at": _iso(now),
                    "batch": {"bucket": batch_ref.bucket, "key": batch_ref.key, "etag": batch_ref.etag},
                    "drift_report": report_uri,
                    "waiting_for_job": holder["job_id"] if holder else None,
                },
            )
            self._coordinator.settle_claim(batch_ref, ClaimState.PENDING, None)
            return LaunchOutcome(LaunchStatus.PENDING, None, key)
        request = TrainingRequest(
            job_id=job_id,
            incoming_bucket=self._incoming_bucket,
            artifacts_bucket=self._artifacts.bucket,
            lock_table=self._lock_table,
            trigger_uri=batch_ref.uri(),
            drift_report_uri=report_uri,
            mlflow_tracking_uri=self._mlflow_tracking_uri,
        )
        with self._record_lock:
            try:
                handle = self._launcher.start(request)
            except BaseException:
                self._coordinator.release_lock(job_id)
                raise
            key = launch_record_key(job_id)
            self._write_launch_record(
                key, job_id=job_id, now=now, handle=handle, batch_ref=batch_ref, report_uri=report_uri
            )
        self._coordinator.settle_claim(batch_ref, ClaimState.LAUNCHED, job_id)
        return LaunchOutcome(LaunchStatus.STARTED, job_id, key)

    def _write_launch_record(
        self, key: str, *, job_id: str, now: datetime, handle: str, batch_ref: BatchRef, report_uri: str
    ) -> None:
        self._artifacts.put_json(
            key,
            {
                "job_id": job_id,
                "backend": self._launcher.backend,
                "status": LaunchStatus.STARTED.value,
                "started_at": _iso(now),
                "handle": handle,
                "batch": {"bucket": batch_ref.bucket, "key": batch_ref.key, "etag": batch_ref.etag},
                "drift_report": report_uri,
            },
        )

    def job_finished(self, job_id: str, return_code: int) -> None:
        """Record a local job's end and free the lock (the local backend's exit hook)."""
        key = launch_record_key(job_id)
        with self._record_lock:
            record = self._artifacts.get_json(key) or {"job_id": job_id}
            record.update(
                status="succeeded" if return_code == 0 else "failed",
                exit_code=return_code,
                finished_at=_iso(self._now()),
            )
            self._artifacts.put_json(key, record)
        self._coordinator.release_lock(job_id)
