"""The whole loop on the embedded stack (or AWS_ENDPOINT_URL): train the first model, then
drop files into the incoming bucket and watch S3 -> SQS -> the drift function (invoked by
the event-source poller) write the reports, quarantine the bad file, and launch exactly one
training job, which the local launcher runs for real: it retrains on the base dataset plus
the drifted labelled batch and publishes a new bundle."""

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import entrypoint
from devstack.stack import EmbeddedStack
from fraudlib import aws
from fraudlib.layout import CHAMPION_POINTER_KEY
from fraudlib.scoring import EXAMPLE_TRANSACTION
from fraudlib.synthetic import generate_transactions, to_csv_bytes
from tests.helpers import list_keys, read_json, wait_for

pytestmark = pytest.mark.e2e
DAY_S = 86_400


def served_version(api_url: str) -> str | None:
    """The model version POST /predict answers with (None while no model is served)."""
    body = json.dumps({"transaction": EXAMPLE_TRANSACTION}).encode()
    request = urllib.request.Request(
        api_url + "predict", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["model_version"]
    except urllib.error.HTTPError as error:
        if error.code == 503:
            return None
        raise


@pytest.fixture
def running_stack(aws_endpoint, stack_name, tmp_path, monkeypatch):
    # Small and fast training for the jobs this test starts; they inherit the environment.
    monkeypatch.setenv("TRAIN_PRESET", "smoke")
    monkeypatch.setenv("TRAIN_MAX_EPOCHS", "8")
    monkeypatch.setenv("TRAIN_PATIENCE", "8")
    stack = EmbeddedStack(
        stack_name=stack_name,
        state_dir=tmp_path / ".stack",
        api_port=0,
        function_env={"MODEL_CHECK_INTERVAL_S": "1"},
    )
    with stack:
        monkeypatch.setenv("ARTIFACTS_BUCKET", stack.outputs["ArtifactsBucketName"])
        monkeypatch.setenv("FRAUD_STATE_DIR", str(stack.state_dir))
        yield stack


def test_train_then_drop_clean_drifted_and_malformed_batches(running_stack, tmp_path):
    s3 = aws.client("s3")
    outputs = json.loads((running_stack.state_dir / "outputs.json").read_text())
    assert set(outputs) >= {"IncomingBucketName", "ArtifactsBucketName", "IncomingQueueUrl", "DeadLetterQueueUrl"}
    incoming, artifacts = outputs["IncomingBucketName"], outputs["ArtifactsBucketName"]

    first = tmp_path / "day-1.csv"
    first.write_bytes(to_csv_bytes(generate_transactions(10_000, seed=20, fraud_rate=0.03, duration_s=DAY_S)))
    assert entrypoint.main(["--data", str(first), "--job-id", "first-model"]) == 0
    first_version = read_json(s3, artifacts, CHAMPION_POINTER_KEY)["model_version"]
    # The scoring API (over HTTP) picks the first model up without a restart.
    assert wait_for(lambda: served_version(outputs["ApiUrl"]) == first_version, timeout_s=30)

    s3.put_object(
        Bucket=incoming,
        Key="incoming/day 2 clean.csv",
        Body=to_csv_bytes(generate_transactions(4000, seed=21, start_time_s=DAY_S, labelled=False)),
    )
    drifted_key = "incoming/day-3-drifted.csv"
    s3.put_object(
        Bucket=incoming,
        Key=drifted_key,
        Body=to_csv_bytes(
            generate_transactions(4000, seed=22, fraud_rate=0.03, start_time_s=2 * DAY_S, shift={"V4": 0.8, "V11": 0.7})
        ),
    )
    s3.put_object(Bucket=incoming, Key="incoming/broken.csv", Body=b'"Time","V1"\n0,1.5\n')

    def reports_done():
        keys = list_keys(s3, artifacts, "reports/drift/")
        by_name = {key.split("/")[-1].split(".")[0]: read_json(s3, artifacts, key) for key in keys}
        # The drifted batch's report is rewritten with the launch once the job has started.
        return len(keys) == 2 and "retraining" in by_name.get("day-3-drifted", {}) and by_name

    by_name = wait_for(reports_done, timeout_s=60)
    assert by_name["day 2 clean"]["status"] == "no_drift"
    assert by_name["day 2 clean"]["reference"]["model_version"] == first_version
    assert by_name["day-3-drifted"]["status"] == "drift"
    assert by_name["day-3-drifted"]["drifted_features"] == ["V4", "V11"]

    quarantine = wait_for(lambda: len(keys := list_keys(s3, incoming, "quarantine/")) == 2 and keys)
    assert quarantine == ["quarantine/broken.csv", "quarantine/broken.csv.error.json"]
    error = read_json(s3, incoming, "quarantine/broken.csv.error.json")["error"]
    assert error["code"] == "missing_column" and error["column"] == "V2"

    launches = [k for k in list_keys(s3, artifacts, "records/launches/") if "first-model" not in k]
    assert len(launches) == 1
    launch = read_json(s3, artifacts, launches[0])
    assert launch["backend"] == "local" and launch["batch"]["key"] == drifted_key
    assert by_name["day-3-drifted"]["retraining"]["job_id"] == launch["job_id"]

    # The local launcher runs the real training job: it retrains on the base dataset plus the
    # drifted labelled batch, and publishes a bundle.
    # About 30 s alone on 2 cores; torch slows down many times over when another process
    # competes for the cores (measured: 446 s), so the wait is generous.
    finished = wait_for(
        lambda: (r := read_json(s3, artifacts, launches[0]))["status"] not in ("started",) and r, timeout_s=900
    )
    log_path = launch["handle"].rpartition("log:")[2]
    assert finished["status"] == "succeeded", Path(log_path).read_text()[-3000:]
    new_version = finished["model_version"]
    manifest = read_json(s3, artifacts, f"models/{new_version}/manifest.json")
    sources = [source["name"] for source in manifest["data_sources"]]
    assert sources == [f"s3://{artifacts}/datasets/base/base.csv.gz", f"s3://{incoming}/{drifted_key}"]
    assert manifest["rows"] == 14_000
    assert manifest["mlflow"]["run_id"] == finished["mlflow_run_id"]
    pointer = read_json(s3, artifacts, CHAMPION_POINTER_KEY)["model_version"]
    assert pointer == (new_version if finished["promoted"] else first_version)
    assert wait_for(lambda: served_version(outputs["ApiUrl"]) == pointer, timeout_s=30)

    assert len(list_keys(s3, artifacts, "records/batches/")) == 2
    sqs = aws.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
