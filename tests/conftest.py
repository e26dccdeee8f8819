"""Shared fixtures: an AWS API endpoint for the integration and e2e layers.

With ``AWS_ENDPOINT_URL`` set (LocalStack, say), the tests use it and start nothing.
Without it, an embedded moto server is started on a free port of 127.0.0.1.
"""

import os
import uuid

import pytest

from devstack.cfn import ResolvedStack, load_template
from devstack.stack import free_port

EMULATOR_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def aws_endpoint():
    for name, value in EMULATOR_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    external = os.environ.get("AWS_ENDPOINT_URL")
    if external:
        yield external
        return
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    try:
        yield os.environ["AWS_ENDPOINT_URL"]
    finally:
        server.stop()
        del os.environ["AWS_ENDPOINT_URL"]


@pytest.fixture
def stack_name() -> str:
    # Lower case and short: it becomes part of bucket names. Unique, so that tests sharing
    # one endpoint (LocalStack) never see each other's objects.
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def resolved_stack(stack_name) -> ResolvedStack:
    return ResolvedStack(load_template(), stack_name=stack_name)


@pytest.fixture(autouse=True, scope="session")
def _quiet_emulator_access_log():
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
