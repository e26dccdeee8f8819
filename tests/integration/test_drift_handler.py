"""The drift handler, invoked with the SQS events AWS delivers, against a real S3/DynamoDB
API (embedded moto, or AWS_ENDPOINT_URL)."""

import gzip
import json
from pathlib import Path
from urllib.parse import unquote_plus

import numpy as np
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from fraudlib.config import SettingsError
from fraudlib.synthetic import generate_transactions, to_csv_bytes
from tests.helpers import list_keys, read_json, sleep_command, wait_for
from tests.integration.conftest import EVENTS

CLEAN = to_csv_bytes(generate_transactions(3000, seed=1, start_time_s=2 * 86_400))
DRIFTED = to_csv_bytes(generate_transactions(3000, seed=2, shift={"V4": 0.8, "Amount": 0.6}))
DRIFTED_TOO = to_csv_bytes(generate_transactions(3000, seed=3, shift={"V9": 0.8}))


def test_event_files_are_what_aws_sends():
    event = json.loads((EVENTS / "sqs-s3-put-incoming.json").read_text())
    record = event["Records"][0]
    assert record["eventSource"] == "aws:sqs"
    body = json.loads(record["body"])
    s3_record = body["Records"][0]
    assert s3_record["eventName"] == "ObjectCreated:Put"
    assert unquote_plus(s3_record["s3"]["object"]["key"]) == "incoming/day 1 été.csv"


def test_without_a_model_the_batch_is_recorded_and_nothing_fails(
    load_drift_handler, upload, deliver, s3, artifacts_bucket
):
    handler = load_drift_handler()
    key = "incoming/day 1 été.csv"
    etag = upload(key, CLEAN)
    assert deliver(handler, key, etag) == {"batchItemFailures": []}
    report = read_json(s3, artifacts_bucket, f"reports/drift/day 1 été.csv.{etag}.json")
    assert report["status"] == "no_reference"
    assert report["rows"] == 3000 and report["labelled"] is True
    record = read_json(s3, artifacts_bucket, f"records/batches/day 1 été.csv.{etag}.json")
    assert record["batch"]["key"] == key and record["labelled"] and record["rows"] == 3000
    assert list_keys(s3, artifacts_bucket, "records/launches/") == []


def test_clean_batch_gets_a_no_drift_report(load_drift_handler, champion, upload, deliver, s3, artifacts_bucket):
    handler = load_drift_handler()
    etag = upload("incoming/clean.csv", CLEAN)
    assert deliver(handler, "incoming/clean.csv", etag) == {"batchItemFailures": []}
    report = read_json(s3, artifacts_bucket, f"reports/drift/clean.csv.{etag}.json")
    assert report["status"] == "no_drift" and report["drifted"] is False
    assert report["reference"]["model_version"] == "v1"
    assert len(report["features"]) == 30
    assert report["features"][0]["tested_as"] == "Time_of_day"
    assert "time of day" in report["time_note"]
    assert set(report["timings_s"]) == {"read_validate", "ks", "total"}
    assert list_keys(s3, artifacts_bucket, "records/launches/") == []


def test_drift_starts_one_job_however_often_the_event_comes(
    load_drift_handler, champion, upload, deliver, s3, artifacts_bucket
):
    handler = load_drift_handler(LOCAL_TRAINING_COMMAND=sleep_command(3))
    etag = upload("incoming/drifted.csv", DRIFTED)
    for attempt in range(3):  # SQS delivers at least once
        assert deliver(handler, "incoming/drifted.csv", etag, f"m-{attempt}") == {"batchItemFailures": []}
    report = read_json(s3, artifacts_bucket, f"reports/drift/drifted.csv.{etag}.json")
    assert report["status"] == "drift"
    assert report["drifted_features"] == ["V4", "Amount"]
    launches = list_keys(s3, artifacts_bucket, "records/launches/")
    assert len(launches) == 1
    launch = read_json(s3, artifacts_bucket, launches[0])
    assert launch["backend"] == "local" and launch["status"] == "started"
    assert launch["batch"] == {
        "bucket": report["batch"]["bucket"],
        "key": "incoming/drifted.csv",
        "etag": etag,
    }
    assert report["retraining"]["job_id"] == launch["job_id"]

    # A second drifted batch while the job runs is recorded as pending, not dropped.
    etag_2 = upload("incoming/drifted-2.csv", DRIFTED_TOO)
    assert deliver(handler, "incoming/drifted-2.csv", etag_2) == {"batchItemFailures": []}
    pending = read_json(s3, artifacts_bucket, f"records/pending/drifted-2.csv.{etag_2}.json")
    assert pending["status"] == "pending" and pending["waiting_for_job"] == launch["job_id"]
    assert len(list_keys(s3, artifacts_bucket, "records/launches/")) == 1

    # When the job ends, its record says so and the lock is free for the next one.
    finished = wait_for(lambda: (r := read_json(s3, artifacts_bucket, launches[0]))["status"] != "started" and r)
    assert finished["status"] == "succeeded" and finished["exit_code"] == 0
    etag_3 = upload("incoming/drifted-3.csv", DRIFTED)
    deliver(handler, "incoming/drifted-3.csv", etag_3)
    assert len(list_keys(s3, artifacts_bucket, "records/launches/")) == 2


def test_failed_launch_is_retried_not_lost(load_drift_handler, champion, upload, deliver, s3, artifacts_bucket):
    broken = load_drift_handler(LOCAL_TRAINING_COMMAND="/nonexistent/train")
    etag = upload("incoming/drifted.csv", DRIFTED)
    # Every record of the batch failed: Powertools fails the invocation, so that Lambda
    # returns the message to the queue (and counts an error for the alarms).
    with pytest.raises(BatchProcessingError, match="All records failed"):
        deliver(broken, "incoming/drifted.csv", etag, "m-1")
    assert list_keys(s3, artifacts_bucket, "records/launches/") == []
    # The retried message (same batch) launches once the launcher works again.
    fixed = load_drift_handler()
    assert deliver(fixed, "incoming/drifted.csv", etag, "m-1") == {"batchItemFailures": []}
    assert len(list_keys(s3, artifacts_bucket, "records/launches/")) == 1


def _with_cell(data: bytes, line: int, field: int, value: bytes) -> bytes:
    lines = data.split(b"\n")
    cells = lines[line - 1].split(b",")
    cells[field] = value
    lines[line - 1] = b",".join(cells)
    return b"\n".join(lines)


GOOD_COLUMNS = generate_transactions(200, seed=9)
GOOD = to_csv_bytes(GOOD_COLUMNS)
HEADER = GOOD.split(b"\n", 1)[0]
BAD_FILES = {
    "empty": (b"", "empty_file"),
    "header-only": (HEADER + b"\n", "no_data_rows"),
    "missing-column": (to_csv_bytes({k: v for k, v in GOOD_COLUMNS.items() if k != "V7"}), "missing_column"),
    "extra-column": (to_csv_bytes({**GOOD_COLUMNS, "merchant": np.ones(200)}), "unexpected_column"),
    "non-numeric": (_with_cell(GOOD, 12, 3, b"abc"), "not_a_number"),
    "nan": (_with_cell(GOOD, 5, 8, b"nan"), "not_finite"),
    "short-row": (_with_cell(GOOD, 9, 30, b"").replace(b",\n", b"\n", 1), "wrong_field_count"),
    "wrong-delimiter": (GOOD.replace(b",", b";"), "wrong_delimiter"),
    "binary": (np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes(), "not_text"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_are_quarantined_whole_and_kept(
    name, load_drift_handler, upload, deliver, s3, incoming_bucket, artifacts_bucket
):
    body, code = BAD_FILES[name]
    handler = load_drift_handler()
    key = f"incoming/{name}.csv"
    etag = upload(key, body)
    assert deliver(handler, key, etag) == {"batchItemFailures": []}
    copy = s3.get_object(Bucket=incoming_bucket, Key=f"quarantine/{name}.csv")["Body"].read()
    assert copy == body
    assert s3.get_object(Bucket=incoming_bucket, Key=key)["Body"].read() == body  # original left in place
    error_report = read_json(s3, incoming_bucket, f"quarantine/{name}.csv.error.json")
    assert error_report["status"] == "rejected"
    assert error_report["error"]["code"] == code, error_report["error"]
    assert error_report["batch"] == {
        "bucket": incoming_bucket,
        "key": key,
        "etag": etag,
        "uri": f"s3://{incoming_bucket}/{key}",
    }
    assert list_keys(s3, artifacts_bucket, "reports/") == []
    assert list_keys(s3, artifacts_bucket, "records/") == []


def test_gz_named_file_that_is_not_gzip(load_drift_handler, upload, deliver, s3, incoming_bucket):
    handler = load_drift_handler()
    etag = upload("incoming/fake.csv.gz", GOOD)
    deliver(handler, "incoming/fake.csv.gz", etag)
    assert read_json(s3, incoming_bucket, "quarantine/fake.csv.gz.error.json")["error"]["code"] == "not_gzip"


def test_gzip_batch_is_accepted(load_drift_handler, upload, deliver, s3, artifacts_bucket):
    handler = load_drift_handler()
    etag = upload("incoming/day.csv.gz", gzip.compress(GOOD))
    deliver(handler, "incoming/day.csv.gz", etag)
    assert read_json(s3, artifacts_bucket, f"reports/drift/day.csv.gz.{etag}.json")["rows"] == 200


def test_oversized_file_is_quarantined(load_drift_handler, upload, deliver, s3, incoming_bucket):
    handler = load_drift_handler(MAX_BATCH_BYTES=str(len(GOOD) - 1))
    etag = upload("incoming/big.csv", GOOD)
    deliver(handler, "incoming/big.csv", etag)
    error = read_json(s3, incoming_bucket, "quarantine/big.csv.error.json")["error"]
    assert error["code"] == "too_large"


def test_overwritten_object_is_processed_once_under_its_new_etag(
    load_drift_handler, upload, deliver, s3, artifacts_bucket
):
    handler = load_drift_handler()
    old_etag = upload("incoming/day.csv", GOOD)
    new_etag = upload("incoming/day.csv", CLEAN)
    assert deliver(handler, "incoming/day.csv", old_etag) == {"batchItemFailures": []}
    assert list_keys(s3, artifacts_bucket, "reports/") == []  # stale event: skipped
    deliver(handler, "incoming/day.csv", new_etag)
    assert list_keys(s3, artifacts_bucket, "reports/") == [f"reports/drift/day.csv.{new_etag}.json"]


def test_s3_test_event_is_ignored(load_drift_handler):
    handler = load_drift_handler()
    event = json.loads((EVENTS / "sqs-s3-test-event.json").read_text())
    from devstack.poller import LambdaContext

    assert handler.lambda_handler(event, LambdaContext(function_name="DriftFunction")) == {"batchItemFailures": []}


def test_missing_setting_fails_at_cold_start_naming_it(load_drift_handler):
    with pytest.raises(SettingsError, match="INCOMING_BUCKET"):
        load_drift_handler(INCOMING_BUCKET="")


def test_emf_metrics_are_emitted(load_drift_handler, champion, upload, deliver, capsys):
    handler = load_drift_handler()
    etag = upload("incoming/clean.csv", CLEAN)
    deliver(handler, "incoming/clean.csv", etag)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    metrics = {
        name for line in lines for d in line["_aws"]["CloudWatchMetrics"] for name in [m["Name"] for m in d["Metrics"]]
    }
    assert {"BatchRows", "DriftedFeatures", "IngestDuration", "BatchesAccepted"} <= metrics
    assert any(line.get("BatchRows") == [3000.0] for line in lines)


def test_events_dir_has_an_event_per_function():
    assert {p.name for p in Path(EVENTS).glob("*.json")} >= {
        "sqs-s3-put-incoming.json",
        "s3-put-incoming.json",
    }
