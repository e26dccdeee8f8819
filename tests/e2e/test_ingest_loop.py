"""The whole ingest loop on the embedded stack (or AWS_ENDPOINT_URL): upload files into the
incoming bucket and watch S3 -> SQS -> the drift function (invoked by the event-source
poller) write the reports, quarantine the bad file and launch exactly one training job."""

import json

import pytest

from devstack.stack import EmbeddedStack
from fraudlib import aws
from fraudlib.synthetic import generate_transactions, to_csv_bytes
from tests.helpers import list_keys, publish_champion, read_json, sleep_command, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def running_stack(aws_endpoint, stack_name, tmp_path):
    stack = EmbeddedStack(
        stack_name=stack_name,
        state_dir=tmp_path / ".stack",
        # The training entrypoint arrives with the training issue; until then a real process
        # that runs for a few seconds stands in for it, so the launch and lock are real.
        function_env={"LOCAL_TRAINING_COMMAND": sleep_command(2)},
    )
    with stack:
        yield stack


def test_drop_clean_drifted_and_malformed_batches(running_stack):
    s3 = aws.client("s3")
    outputs = json.loads((running_stack.state_dir / "outputs.json").read_text())
    assert set(outputs) >= {
        "IncomingBucketName",
        "ArtifactsBucketName",
        "IncomingQueueUrl",
        "DeadLetterQueueUrl",
    }
    incoming, artifacts = outputs["IncomingBucketName"], outputs["ArtifactsBucketName"]
    publish_champion(s3, artifacts)

    s3.put_object(
        Bucket=incoming,
        Key="incoming/day 2 clean.csv",
        Body=to_csv_bytes(generate_transactions(4000, seed=21, start_time_s=2 * 86_400)),
    )
    s3.put_object(
        Bucket=incoming,
        Key="incoming/day-3-drifted.csv",
        Body=to_csv_bytes(generate_transactions(4000, seed=22, shift={"V4": 0.8, "V11": 0.7})),
    )
    s3.put_object(Bucket=incoming, Key="incoming/broken.csv", Body=b'"Time","V1"\n0,1.5\n')

    def reports_done():
        keys = list_keys(s3, artifacts, "reports/drift/")
        by_name = {key.split("/")[-1].split(".")[0]: read_json(s3, artifacts, key) for key in keys}
        # The drifted batch's report is rewritten with the launch once the job has started.
        return len(keys) == 2 and "retraining" in by_name.get("day-3-drifted", {}) and by_name

    by_name = wait_for(reports_done)
    quarantine = wait_for(lambda: list_keys(s3, incoming, "quarantine/") or None)
    assert by_name["day 2 clean"]["status"] == "no_drift"
    assert by_name["day-3-drifted"]["status"] == "drift"
    assert by_name["day-3-drifted"]["drifted_features"] == ["V4", "V11"]

    assert quarantine == ["quarantine/broken.csv", "quarantine/broken.csv.error.json"]
    error = read_json(s3, incoming, "quarantine/broken.csv.error.json")["error"]
    assert error["code"] == "missing_column" and error["column"] == "V2"

    launches = wait_for(lambda: list_keys(s3, artifacts, "records/launches/") or None)
    assert len(launches) == 1
    launch = read_json(s3, artifacts, launches[0])
    assert launch["batch"]["key"] == "incoming/day-3-drifted.csv"
    assert by_name["day-3-drifted"]["retraining"] == {
        "status": "started",
        "job_id": launch["job_id"],
        "record": launches[0],
    }
    finished = wait_for(lambda: (r := read_json(s3, artifacts, launches[0]))["status"] != "started" and r)
    assert finished["status"] == "succeeded"

    records = list_keys(s3, artifacts, "records/batches/")
    assert len(records) == 2
    sqs = aws.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
