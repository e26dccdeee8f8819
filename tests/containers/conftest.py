"""The container tests need a Docker API (a Docker engine, or podman's service that
``scripts/container-engine.sh up`` starts) and the SAM CLI of ``make setup``.

Without an engine they are skipped with the reason, unless ``REQUIRE_CONTAINERS=1`` (set by
``make containers-test`` and ``.ci/run``), where a missing engine fails them instead: CI must
never pass by skipping what it was meant to check.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest

from devstack.engine import docker_client, docker_environment
from devstack.stack import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SAM = REPO_ROOT / ".tools" / "sam" / "bin" / "sam"
SAM_LOCAL = REPO_ROOT / "scripts" / "sam-local.sh"
TRAINING_IMAGE = "fraud-training:local"


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.containers)


@pytest.fixture(scope="session")
def engine():
    # Reads wait as long as a training container is silent (a first MLflow store's migrations
    # took over 10 s on a fresh clone): no short client timeout.
    client = docker_client(timeout_s=900)
    if client is None or not SAM.exists():
        reason = "no Docker API answers (scripts/container-engine.sh up)" if client is None else f"no {SAM}"
        if os.environ.get("REQUIRE_CONTAINERS") == "1":
            pytest.fail(f"REQUIRE_CONTAINERS=1 but {reason}")
        pytest.skip(reason)
    yield client
    client.close()


@pytest.fixture(scope="session")
def engine_env(engine) -> dict[str, str]:
    """The environment for docker and sam commands: the engine's DOCKER_HOST, no telemetry."""
    return {**os.environ, **docker_environment(), "SAM_CLI_TELEMETRY": "0"}


def run_timed(command: list[str], env: dict[str, str], timeout_s: float, **kwargs) -> tuple[float, str]:
    """Run a command from the repository root; fail with its output tail when it fails."""
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
    )
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {done.returncode}:\n{output[-4000:]}")
    return elapsed, done.stdout


@pytest.fixture(scope="session")
def sam_build(engine_env) -> float:
    """``sam build``: the layer, the drift function and the scoring image (seconds taken)."""
    elapsed, _ = run_timed([str(SAM), "build"], engine_env, timeout_s=1200)
    return elapsed


@pytest.fixture(scope="session")
def training_image(engine_env) -> str:
    """The training image, built as ``make training-image`` builds it."""
    run_timed(["make", "--no-print-directory", "training-image"], engine_env, timeout_s=1800)
    return TRAINING_IMAGE


@pytest.fixture(scope="module")
def container_endpoint(engine):
    """An emulated AWS endpoint that containers reach: moto on 0.0.0.0 of a free port.

    Function containers of ``sam local`` sit on the engine's bridge and call it as
    host.docker.internal; training containers on the host network, and this process, call it
    on 127.0.0.1. (The session's endpoint listens on 127.0.0.1 only, or is LocalStack's.)
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
            patch.setenv(name, os.environ.get(name, value))
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        try:
            yield port
        finally:
            server.stop()
