"""Shared fixtures: an AWS API endpoint for the integration and e2e layers.

With ``AWS_ENDPOINT_URL`` set (LocalStack, say), the tests use it and start nothing.
Without it, an embedded moto server is started on a free port of 127.0.0.1.

LocalStack's free edition lacks some services the tests use (ECR and SageMaker; its DynamoDB
needs a Java and DynamoDB Local download). Every test provisions the stack, table and
repository included, so skipping on them would skip everything: instead each service that
LocalStack answers with a server error is asked of an embedded moto server, through botocore's
``AWS_ENDPOINT_URL_<SERVICE>``, and the run's summary says which.
"""

import json
import os
import urllib.request
import uuid

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.cfn import ResolvedStack, load_template
from devstack.stack import free_port

EMULATOR_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
LOCALSTACK_HEALTH_PATH = "/_localstack/health"
# A read-only call per service that the stacks and the tests use: does an endpoint serve it?
SERVICE_PROBES = {
    "s3": "list_buckets",
    "sqs": "list_queues",
    "dynamodb": "list_tables",
    "iam": "list_roles",
    "ecr": "describe_repositories",
    "sagemaker": "list_training_jobs",
}
# One attempt: a missing service answers 5xx, which standard retries would repeat. LocalStack's
# DynamoDB spends about 10 s on its first call trying to download a Java.
_PROBE_CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60)
_SERVED_BY_MOTO = pytest.StashKey[dict[str, str]]()


def is_localstack(endpoint: str) -> bool:
    """Whether ``endpoint`` is LocalStack: it answers its health document."""
    try:
        with urllib.request.urlopen(endpoint.rstrip("/") + LOCALSTACK_HEALTH_PATH, timeout=5) as response:
            return "services" in json.loads(response.read())
    except (OSError, ValueError):
        return False


def missing_services(endpoint: str) -> dict[str, str]:
    """{service: the endpoint's error} for the services of SERVICE_PROBES it does not serve.

    Services with their own ``AWS_ENDPOINT_URL_<SERVICE>`` are the user's choice: not probed.
    """
    session = botocore.session.get_session()
    missing = {}
    for service, operation in SERVICE_PROBES.items():
        if os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}"):
            continue
        client = session.create_client(service, region_name="us-east-1", endpoint_url=endpoint, config=_PROBE_CONFIG)
        try:
            getattr(client, operation)()
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] >= 500:
                missing[service] = exc.response["Error"].get("Message", "") or str(exc)
    return missing


@pytest.fixture(autouse=True, scope="session")
def _localstack_gaps_served_by_moto(request):
    """On LocalStack, what it does not serve comes from an embedded moto server."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint or not is_localstack(endpoint):
        yield
        return
    for name, value in EMULATOR_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    missing = missing_services(endpoint)
    if not missing:
        yield
        return
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    variables = [f"AWS_ENDPOINT_URL_{service.upper()}" for service in missing]
    for name in variables:
        os.environ[name] = f"http://127.0.0.1:{port}"
    request.config.stash[_SERVED_BY_MOTO] = missing
    try:
        yield
    finally:
        server.stop()
        for name in variables:
            del os.environ[name]


def pytest_terminal_summary(terminalreporter, config):
    missing = config.stash.get(_SERVED_BY_MOTO, {})
    if missing:
        terminalreporter.section("services LocalStack does not serve, asked of an embedded moto server")
        for service, error in missing.items():
            terminalreporter.write_line(f"{service}: {error[:160]}")


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


@pytest.fixture(scope="session")
def trained_bundles(aws_endpoint, tmp_path_factory):
    """Two real model bundles, {model_version: {file name: bytes}}, oldest first.

    Trained once per session by the training job's entry point (small synthetic data, a few
    epochs) in a stack of their own; tests publish them into their own stacks.
    """
    import entrypoint
    from devstack.provision import provision
    from fraudlib import aws
    from fraudlib.layout import MODELS_PREFIX
    from fraudlib.synthetic import generate_transactions, to_csv_bytes

    state = tmp_path_factory.mktemp("bundles")
    outputs = provision(ResolvedStack(load_template(), stack_name=f"b{uuid.uuid4().hex[:10]}"))
    bucket = outputs["ArtifactsBucketName"]
    s3 = aws.client("s3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARTIFACTS_BUCKET", bucket)
        patch.setenv("LOCK_TABLE", outputs["TrainingLockTableName"])
        patch.setenv("FRAUD_STATE_DIR", str(state))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for seed in (11, 12):
            data = state / f"data-{seed}.csv"
            data.write_bytes(to_csv_bytes(generate_transactions(6000, seed=seed, fraud_rate=0.03)))
            args = ["--data", str(data), "--job-id", f"bundle-{seed}", "--seed", str(seed)]
            args += ["--preset", "smoke", "--max-epochs", "5", "--patience", "5", "--baseline", "false"]
            assert entrypoint.main(args) == 0
    bundles: dict[str, dict[str, bytes]] = {}
    for key in sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=MODELS_PREFIX)["Contents"]):
        version, _, name = key[len(MODELS_PREFIX) :].partition("/")
        if name:
            bundles.setdefault(version, {})[name] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert len(bundles) == 2, sorted(bundles)
    return bundles
