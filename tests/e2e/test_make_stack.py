"""`make stack` as a user runs it: a process that serves the stack until SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

from devstack.stack import free_port
from fraudlib.synthetic import generate_transactions, to_csv_bytes
from tests.helpers import list_keys, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_stack_process_serves_uploads_and_stops_on_sigterm(tmp_path, stack_name):
    # With AWS_ENDPOINT_URL set (LocalStack, or the session's moto) the stack uses it;
    # without, it starts its own moto server, as for a user.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.stack",
            "--port",
            str(free_port()),
            "--state-dir",
            str(tmp_path),
            "--stack-name",
            stack_name,
            "--api-port",
            str(free_port()),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        outputs_path = tmp_path / "outputs.json"
        wait_for(outputs_path.exists, timeout_s=60)
        outputs = json.loads(outputs_path.read_text())
        s3 = boto3.client(
            "s3",
            endpoint_url=outputs["EndpointUrl"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.put_object(
            Bucket=outputs["IncomingBucketName"],
            Key="incoming/from boto3.csv",
            Body=to_csv_bytes(generate_transactions(1000, seed=5)),
        )
        reports = wait_for(lambda: list_keys(s3, outputs["ArtifactsBucketName"], "reports/drift/") or None)
        assert reports[0].startswith("reports/drift/from boto3.csv.")
        # The scoring API is served too; no model is promoted in this stack yet.
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(outputs["ApiUrl"] + "health", timeout=10)
        assert answer.value.code == 503
        assert json.loads(answer.value.read())["status"] == "no_model"
    finally:
        # Twice, back to back: `kill %1` on `make stack &` reaches both make's process group
        # and, forwarded by make, the stack; nested handlers once deadlocked here.
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "is up on" in output and "stopping the embedded stack" in output


def test_a_taken_port_is_named_and_the_process_exits(tmp_path):
    """A second `make stack` beside a running one: a clear message and exit 1, not a hang
    (moto's server waits forever for a thread that failed to bind)."""
    env = {name: value for name, value in os.environ.items() if name != "AWS_ENDPOINT_URL"}
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        finished = subprocess.run(
            [sys.executable, "-m", "devstack.stack", "--port", str(port), "--state-dir", str(tmp_path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert finished.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in finished.stderr
    assert not (tmp_path / "outputs.json").exists()
