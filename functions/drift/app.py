"""Drift function: SQS (S3 ObjectCreated notifications) -> fraudlib.ingest.

An adapter only: it decodes the SQS and S3 event shapes, calls
``BatchIngestor.process`` for each object, and turns the outcome into logs and metrics.
Failed records are reported back (``ReportBatchItemFailures``) so that SQS retries just
those, and after ``maxReceiveCount`` moves them to the dead-letter queue.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.s3_event import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from fraudlib.config import DriftSettings
from fraudlib.ingest import IngestOutcome, IngestStatus, build_ingestor
from fraudlib.retraining import LaunchStatus

logger = Logger()
tracer = Tracer()
# A metric set of this module's own: Powertools' default is one set per process, which the
# embedded stack (several environments and both functions in one process) would share.
metrics = Metrics(provider=AmazonCloudWatchEMFProvider())

# Cold start: a missing or wrong setting fails here, naming the variable.
settings = DriftSettings.from_env(os.environ)
ingestor = build_ingestor(settings)
processor = BatchProcessor(event_type=EventType.SQS)


def _publish(outcome: IngestOutcome) -> None:
    fields = {
        "batch_key": outcome.batch_ref.key,
        "etag": outcome.batch_ref.etag,
        "status": outcome.status.value,
    }
    if outcome.status is IngestStatus.SKIPPED:
        logger.warning("batch skipped", extra={**fields, "reason": outcome.reason})
        metrics.add_metric(name="BatchesSkipped", unit=MetricUnit.Count, value=1)
        return
    metrics.add_metric(name="IngestDuration", unit=MetricUnit.Milliseconds, value=outcome.duration_s * 1000)
    if outcome.status is IngestStatus.QUARANTINED:
        logger.warning(
            "batch quarantined",
            extra={
                **fields,
                "error_code": outcome.error_code,
                "reason": outcome.reason,
                "report": outcome.report_key,
            },
        )
        metrics.add_metric(name="BatchesQuarantined", unit=MetricUnit.Count, value=1)
        return
    drift = outcome.drift
    metrics.add_metric(name="BatchRows", unit=MetricUnit.Count, value=outcome.rows)
    metrics.add_metric(name="BatchesAccepted", unit=MetricUnit.Count, value=1)
    if drift is not None:
        metrics.add_metric(name="DriftedFeatures", unit=MetricUnit.Count, value=len(drift.drifted_features))
        metrics.add_metric(name="BatchesDrifted", unit=MetricUnit.Count, value=int(drift.drifted))
    if outcome.launch is not None and outcome.launch.status is LaunchStatus.STARTED:
        metrics.add_metric(name="TrainingJobsStarted", unit=MetricUnit.Count, value=1)
    logger.info(
        "batch processed",
        extra={
            **fields,
            "rows": outcome.rows,
            "report": outcome.report_key,
            "drifted": None if drift is None else drift.drifted,
            "drifted_features": [] if drift is None else drift.drifted_features,
            "training": None if outcome.launch is None else outcome.launch.status.value,
            "job_id": None if outcome.launch is None else outcome.launch.job_id,
        },
    )


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    logger.set_correlation_id(record.message_id)
    body: dict[str, Any] = json.loads(record.body)
    if body.get("Event") == "s3:TestEvent":
        # S3 sends one when the notification is configured; there is nothing to process.
        logger.info("S3 test event ignored", extra={"bucket": body.get("Bucket")})
        return
    for s3_record in S3Event(body).records:
        # Keys arrive URL-encoded, with '+' for spaces.
        key = unquote_plus(s3_record.s3.get_object.key)
        logger.append_keys(batch_key=key)
        _publish(ingestor.process(s3_record.s3.bucket.name, key, s3_record.s3.get_object.etag))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
