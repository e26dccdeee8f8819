"""The JSON documents the drift path writes: drift reports and quarantine reports.

Pure functions from results to plain mappings; where they are stored is ``layout``'s job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fraudlib.batch import Batch, BatchValidationError
from fraudlib.coordination import BatchRef
from fraudlib.drift import DriftResult, TimeMode
from fraudlib.profile import ReferenceProfile

REPORT_FORMAT_VERSION = 1
TIME_OF_DAY_NOTE = (
    "Time is a running clock (seconds since the first transaction), so it was tested as"
    " time of day (Time mod 86400 s) against the reference's time of day"
)
RAW_TIME_NOTE = "Time was tested raw; a later batch drifts on a running clock by construction"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _batch_fields(batch_ref: BatchRef) -> dict[str, str]:
    return {"bucket": batch_ref.bucket, "key": batch_ref.key, "etag": batch_ref.etag, "uri": batch_ref.uri()}


def drift_report(
    *,
    batch_ref: BatchRef,
    batch: Batch,
    result: DriftResult | None,
    profile: ReferenceProfile | None,
    profile_key: str | None,
    timings_s: dict[str, float],
) -> dict[str, Any]:
    """The report of one accepted batch.

    ``status`` is ``drift``, ``no_drift``, or ``no_reference`` (no model trained yet: the
    batch is recorded and nothing is tested).
    """
    report: dict[str, Any] = {
        "format_version": REPORT_FORMAT_VERSION,
        "created_at": _now(),
        "batch": _batch_fields(batch_ref),
        "rows": batch.n_rows,
        "labelled": batch.labelled,
        "frauds": int(batch.labels.sum()) if batch.labels is not None else None,
        "timings_s": {name: round(value, 4) for name, value in timings_s.items()},
    }
    if result is None or profile is None:
        report.update(
            status="no_reference",
            drifted=None,
            message="no reference profile yet (no model has been promoted): batch recorded, not tested",
            reference=None,
            features=[],
            drifted_features=[],
        )
        return report
    report.update(
        status="drift" if result.drifted else "no_drift",
        drifted=result.drifted,
        rule=result.rule,
        fired=result.fired,
        p_value_method=result.p_value_method.value,
        time_note=TIME_OF_DAY_NOTE if result.time_mode is TimeMode.TIME_OF_DAY else RAW_TIME_NOTE,
        reference={
            "model_version": profile.model_version,
            "data_hash": profile.data_hash,
            "rows": profile.n_rows,
            "source_rows": profile.n_source_rows,
            "profile_key": profile_key,
        },
        drifted_features=result.drifted_features,
        features=[
            {
                "feature": f.feature,
                "tested_as": f.tested_as,
                "statistic": f.statistic,
                "p_value": f.p_value,
                "adjusted_p_value": f.adjusted_p_value,
                "significant": f.significant,
                "above_floor": f.above_floor,
                "drifted": f.drifted,
            }
            for f in result.features
        ],
    )
    return report


def quarantine_report(
    *, batch_ref: BatchRef, size_bytes: int, error: BatchValidationError, quarantine_uri: str
) -> dict[str, Any]:
    """Why a batch was rejected, stored beside its quarantined copy."""
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "created_at": _now(),
        "status": "rejected",
        "batch": _batch_fields(batch_ref),
        "size_bytes": size_bytes,
        "quarantined_copy": quarantine_uri,
        "original_left_in_place": True,
        "error": error.to_dict(),
    }


def batch_record(*, batch_ref: BatchRef, batch: Batch, report_key: str, status: str) -> dict[str, Any]:
    """The small record kept for every accepted batch (the training job lists these)."""
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "recorded_at": _now(),
        "batch": _batch_fields(batch_ref),
        "rows": batch.n_rows,
        "labelled": batch.labelled,
        "drift_status": status,
        "drift_report_key": report_key,
    }
