"""The docker training backend's container: what it runs and what of the host it gets.

The container itself is run by tests/containers (it needs a Docker API); here a recording
client stands in for the Docker SDK so the exit path can be checked without an engine.
"""

import time

from fraudlib.config import DockerTrainingSettings
from fraudlib.launcher import DockerLauncher, TrainingRequest

SETTINGS = DockerTrainingSettings(
    image="fraud-training:local", network="host", mounts=("/state:/state", "/data:/in:ro"), log_dir=""
)
REQUEST = TrainingRequest(
    job_id="retrain-20261204-000000-abcdef12",
    incoming_bucket="in",
    artifacts_bucket="art",
    lock_table="lock",
    trigger_uri="s3://in/incoming/a.csv",
    drift_report_uri="s3://art/reports/drift/a.json",
)
HOST_ENV = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
    "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:5000",
    "AWS_ACCESS_KEY_ID": "testing",
    "TRAIN_MAX_EPOCHS": "6",
    "FRAUD_STATE_DIR": "/state",
    "HOME": "/root",
    "PATH": "/usr/bin",
    "DOCKER_HOST": "unix:///run/podman/podman.sock",
    "INCOMING_BUCKET": "stale-value-from-the-host",
}


def test_the_container_runs_the_image_as_sagemaker_does_with_the_request_flags():
    spec = DockerLauncher(SETTINGS, base_env=HOST_ENV).container_spec(REQUEST)
    assert spec["image"] == "fraud-training:local"
    assert spec["command"][0] == "train"
    flags = spec["command"][1:]
    assert dict(zip(flags[::2], flags[1::2], strict=True)) == {
        "--job-id": REQUEST.job_id,
        "--trigger-uri": REQUEST.trigger_uri,
        "--drift-report-uri": REQUEST.drift_report_uri,
    }
    assert spec["name"] == REQUEST.job_id and spec["detach"] is True
    assert spec["network_mode"] == "host"
    assert spec["volumes"] == {"/state": {"bind": "/state", "mode": "rw"}, "/data": {"bind": "/in", "mode": "ro"}}


def test_only_the_endpoint_credentials_state_and_train_settings_leak_in():
    environment = DockerLauncher(SETTINGS, base_env=HOST_ENV).container_spec(REQUEST)["environment"]
    assert "HOME" not in environment and "PATH" not in environment and "DOCKER_HOST" not in environment
    assert environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
    # A service served elsewhere (LocalStack's gaps filled by moto) is reached there too.
    assert environment["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:5000"
    assert environment["TRAIN_MAX_EPOCHS"] == "6"
    assert environment["FRAUD_STATE_DIR"] == "/state"
    # The request's own variables win over whatever the host had.
    assert environment["INCOMING_BUCKET"] == "in"
    assert environment["TRAINING_JOB_ID"] == REQUEST.job_id


class _Container:
    short_id = "c0ffee"

    def __init__(self, status: int) -> None:
        self.status = status
        self.removed = False

    def wait(self):
        return {"StatusCode": self.status}

    def logs(self, stream: bool, follow: bool):
        assert stream and follow  # followed as it comes (see DockerLauncher._watch)
        return iter([b"epoch 1\n", b"failed: out of memory\n"])

    def remove(self) -> None:
        self.removed = True


class _Containers:
    def __init__(self, container: _Container) -> None:
        self.container = container
        self.runs: list[dict] = []

    def run(self, **spec):
        self.runs.append(spec)
        return self.container


class _Client:
    def __init__(self, status: int) -> None:
        self.containers = _Containers(_Container(status))


def test_the_exit_code_reaches_the_callback_after_the_log_is_kept(tmp_path):
    finished: list[tuple[str, int, bool]] = []
    settings = DockerTrainingSettings(image="img", network="host", mounts=(), log_dir=str(tmp_path / "jobs"))
    client = _Client(status=137)
    launcher = DockerLauncher(
        settings,
        on_exit=lambda job_id, code: finished.append((job_id, code, (tmp_path / "jobs" / f"{job_id}.log").exists())),
        base_env={},
        client=client,
    )
    handle = launcher.start(REQUEST)
    assert handle == "container:c0ffee image:img"
    for _ in range(200):
        if finished:
            break
        time.sleep(0.01)
    assert finished == [(REQUEST.job_id, 137, True)]
    assert "out of memory" in (tmp_path / "jobs" / f"{REQUEST.job_id}.log").read_text()
    assert client.containers.container.removed
