"""The real container paths, through a Docker API: the images users build, ``sam local invoke``
and ``sam local start-api`` of the built template, ``docker run`` of the training image, and
the drift function's docker training backend in the embedded stack.

The functions in containers reach the session's emulated AWS endpoint on the host's network
as host.docker.internal, through scripts/sam-local.sh as the README's commands do.
"""

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

from devstack.cfn import ResolvedStack, load_template
from devstack.engine import TrainingPath
from devstack.provision import provision
from devstack.stack import EmbeddedStack, free_port
from fraudlib import aws
from fraudlib.launcher import container_environment, docker_volumes
from fraudlib.layout import CHAMPION_POINTER_KEY, DRIFT_REPORT_PREFIX, LAUNCH_RECORD_PREFIX
from fraudlib.model import FraudModel
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.serving import load_bundle
from fraudlib.store import ArtifactStore
from fraudlib.synthetic import generate_transactions, to_csv_bytes
from tests.containers.conftest import REPO_ROOT, SAM_LOCAL, run_timed
from tests.helpers import list_keys, read_json

# The names events/env.local.json and the sample events use: sam deploy's default stack.
STACK_NAME = "fraud-detection"
FAST_TRAINING = {"TRAIN_PRESET": "smoke", "TRAIN_MAX_EPOCHS": "6", "TRAIN_PATIENCE": "6"}
# The key in events/sqs-s3-put-incoming.json, URL-decoded as S3 events are.
SAMPLE_EVENT = REPO_ROOT / "events" / "sqs-s3-put-incoming.json"


def _sam_local_env(engine_env: dict[str, str], port: int) -> dict[str, str]:
    return {**engine_env, "ENDPOINT_PORT": str(port)}


def _sam_local_invoke(stack, engine_env: dict[str, str], function: str, event: str) -> tuple[dict, str]:
    """``scripts/sam-local.sh invoke``: the function's response and the whole output."""
    _, output = run_timed(
        [str(SAM_LOCAL), "invoke", function, "-e", event], _sam_local_env(engine_env, stack.port), timeout_s=300
    )
    return _last_json_line(output), output


def _last_json_line(output: str) -> dict:
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON response in:\n{output[-2000:]}")


@pytest.fixture(scope="module")
def stack(container_endpoint, tmp_path_factory):
    """The template's resources, named as sam deploy names them, on the session's endpoint.

    Only provisioned: no in-process function consumes the incoming queue here, so what the
    containers do is all that happens.
    """
    state = tmp_path_factory.mktemp("container-stack")
    outputs = provision(ResolvedStack(load_template(), stack_name=STACK_NAME))
    return SimpleNamespace(
        outputs=outputs, endpoint_url=os.environ["AWS_ENDPOINT_URL"], port=container_endpoint, state_dir=state
    )


def _job_environment(stack) -> dict[str, str]:
    """What a training container needs: the endpoint, credentials, buckets, state folder."""
    return {
        **container_environment(dict(os.environ)),
        "AWS_ENDPOINT_URL": stack.endpoint_url,
        "ARTIFACTS_BUCKET": stack.outputs["ArtifactsBucketName"],
        "INCOMING_BUCKET": stack.outputs["IncomingBucketName"],
        "LOCK_TABLE": stack.outputs["TrainingLockTableName"],
        "FRAUD_STATE_DIR": str(stack.state_dir),
        **FAST_TRAINING,
    }


@pytest.fixture(scope="module")
def first_model(stack, engine, training_image) -> str:
    """`docker run` of the training image on a synthetic CSV: the model version it promoted."""
    data = stack.state_dir / "first.csv"
    data.write_bytes(to_csv_bytes(generate_transactions(8_000, seed=11, fraud_rate=0.03)))
    container = engine.containers.run(
        training_image,
        ["train", "--data", str(data), "--job-id", "first-container"],
        environment=_job_environment(stack),
        # The host's network (the endpoint is on 127.0.0.1) and the state folder at its own path.
        network_mode="host",
        volumes=docker_volumes((f"{stack.state_dir}:{stack.state_dir}",)),
        detach=True,
    )
    try:
        # Followed, as the launcher does: under podman an unread container's writes stall.
        logs = b"".join(container.logs(stream=True, follow=True)).decode("utf-8", "replace")
        status = container.wait(timeout=900)["StatusCode"]
    finally:
        container.remove(force=True)
    assert status == 0, logs[-3000:]
    pointer = read_json(aws.client("s3"), stack.outputs["ArtifactsBucketName"], CHAMPION_POINTER_KEY)
    return str(pointer["model_version"])


def test_the_training_image_trains_and_publishes_a_bundle(stack, first_model):
    s3 = aws.client("s3")
    bucket = stack.outputs["ArtifactsBucketName"]
    pointer = read_json(s3, bucket, CHAMPION_POINTER_KEY)
    bundle = set(list_keys(s3, bucket, pointer["bundle_prefix"]))
    assert {f"{pointer['bundle_prefix']}{name}" for name in ("manifest.json", "model.onnx")} <= bundle
    manifest = read_json(s3, bucket, f"{pointer['bundle_prefix']}manifest.json")
    assert manifest["model_version"] == first_model
    # The run was tracked in the state folder's MLflow store, mounted into the container.
    assert (stack.state_dir / "mlflow.db").stat().st_size > 0


def test_sam_local_invoke_scoring_health_names_the_promoted_model(stack, first_model, sam_build, engine_env):
    response, output = _sam_local_invoke(stack, engine_env, "ScoringFunction", "events/api-health.json")
    health = json.loads(response["body"])
    assert (response["statusCode"], health["model_version"]) == (200, first_model), (health, output[-3000:])


def test_sam_local_invoke_scoring_answers_with_the_promoted_model(stack, first_model, sam_build, engine_env):
    response, _ = _sam_local_invoke(stack, engine_env, "ScoringFunction", "events/api-predict.json")
    assert response["statusCode"] == 200, response
    body = json.loads(response["body"])
    assert body["model_version"] == first_model
    # The probability the container computed is the bundle's, computed here in-process.
    event = json.loads((REPO_ROOT / "events" / "api-predict.json").read_text())
    features = json.loads(event["body"])["features"]
    model = _load_bundle(stack)
    expected = float(model.predict_proba(np.array([features], dtype=np.float64))[0])
    assert body["fraud_probability"] == pytest.approx(expected, abs=1e-6)


def _load_bundle(stack) -> FraudModel:
    """The served bundle, loaded here as the scoring function loads it."""
    store = ArtifactStore(aws.client("s3"), stack.outputs["ArtifactsBucketName"])
    pointer = store.champion_pointer()
    assert pointer is not None
    return load_bundle(store, pointer)


def test_sam_local_invoke_drift_checks_a_batch_and_writes_the_report(
    stack, first_model, sam_build, engine_env, tmp_path
):
    # A batch like the training data (no drift, so no training starts), at the sample event's key.
    sample = json.loads(SAMPLE_EVENT.read_text())
    notification = json.loads(sample["Records"][0]["body"])
    key = urllib.parse.unquote_plus(notification["Records"][0]["s3"]["object"]["key"])
    s3 = aws.client("s3")
    incoming = stack.outputs["IncomingBucketName"]
    etag = s3.put_object(
        Bucket=incoming, Key=key, Body=to_csv_bytes(generate_transactions(3_000, seed=12, fraud_rate=0.03))
    )["ETag"].strip('"')
    # The sample event with the ETag of the object just written (the function checks it).
    notification["Records"][0]["s3"]["object"]["eTag"] = etag
    sample["Records"][0]["body"] = json.dumps(notification)
    event = tmp_path / "sqs-event.json"
    event.write_text(json.dumps(sample))

    response, _ = _sam_local_invoke(stack, engine_env, "DriftFunction", str(event))
    assert response == {"batchItemFailures": []}
    reports = list_keys(s3, stack.outputs["ArtifactsBucketName"], DRIFT_REPORT_PREFIX)
    documents = [read_json(s3, stack.outputs["ArtifactsBucketName"], name) for name in reports]
    mine = [doc for doc in documents if doc.get("batch", {}).get("etag") == etag]
    assert mine, f"no drift report for {key} ({etag}) among {reports}"
    assert len(mine[0]["features"]) == len(FEATURE_COLUMNS)


def test_sam_local_start_api_serves_predict(stack, first_model, sam_build, engine_env):
    port = free_port()
    server = subprocess.Popen(
        [
            str(SAM_LOCAL),
            "start-api",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=_sam_local_env(engine_env, stack.port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    body = json.dumps({"transactions": [dict.fromkeys(FEATURE_COLUMNS, 0.5), dict.fromkeys(FEATURE_COLUMNS, -1.0)]})
    try:
        answer = _post_until_served(f"http://127.0.0.1:{port}/predict", body.encode(), server, timeout_s=180)
    finally:
        # A background start-api ignores SIGINT; TERM stops it.
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert [item["model_version"] for item in answer["predictions"]] == [first_model, first_model]
    rows = np.array([[0.5] * len(FEATURE_COLUMNS), [-1.0] * len(FEATURE_COLUMNS)])
    expected = _load_bundle(stack).predict_proba(rows)
    assert [item["fraud_probability"] for item in answer["predictions"]] == pytest.approx(list(expected), abs=1e-6)


def _post_until_served(url: str, body: bytes, server: subprocess.Popen, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"sam local start-api exited:\n{server.stdout.read()[-3000:]}")
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError) as exc:
            last_error = exc
            time.sleep(1)
    raise AssertionError(f"no answer from {url} in {timeout_s} s: {last_error}")


def test_drift_in_the_embedded_stack_retrains_in_the_training_container(stack, first_model, training_image):
    training = TrainingPath("docker", training_image, "the container tests")
    with EmbeddedStack(
        STACK_NAME, port=None, state_dir=stack.state_dir, api_port=None, function_env=FAST_TRAINING, training=training
    ) as running:
        s3 = aws.client("s3")
        artifacts = running.outputs["ArtifactsBucketName"]
        drifted = generate_transactions(3_000, seed=13, fraud_rate=0.03)
        drifted["Amount"] = drifted["Amount"] * 8 + 400
        drifted["V4"] = drifted["V4"] + 3
        s3.put_object(
            Bucket=running.outputs["IncomingBucketName"], Key="incoming/drifted.csv", Body=to_csv_bytes(drifted)
        )
        launch = _wait_for(lambda: _launch_record(s3, artifacts), timeout_s=120, what="a training launch record")
        assert launch["backend"] == "docker"
        assert launch["handle"].startswith("container:")
        # exit_code is what the launcher's watcher adds once the container has ended (the job
        # itself records finished_at a moment before).
        finished = _wait_for(
            lambda: (record := _launch_record(s3, artifacts)) and "exit_code" in record and record,
            timeout_s=900,
            what="the training container to finish",
        )
    log = (stack.state_dir / "jobs" / f"{launch['job_id']}.log").read_text()
    assert (finished["exit_code"], finished["status"]) == (0, "succeeded"), log[-3000:]
    # The container's own output, kept after the container was removed.
    assert "incoming/drifted.csv" in log


def _launch_record(s3, bucket):
    # Records of jobs that drift started (the first model's job is recorded as "manual").
    keys = [key for key in list_keys(s3, bucket, f"{LAUNCH_RECORD_PREFIX}retrain-") if key.endswith(".json")]
    return read_json(s3, bucket, keys[-1]) if keys else None


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
