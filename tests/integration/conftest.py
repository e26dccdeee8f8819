import hashlib
import json
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from devstack.poller import LambdaContext
from devstack.provision import provision
from devstack.stack import load_function_module
from fraudlib import aws
from tests.helpers import publish_champion, sleep_command

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture
def outputs(aws_endpoint, resolved_stack):
    return provision(resolved_stack)


@pytest.fixture
def s3(aws_endpoint):
    return aws.client("s3")


@pytest.fixture
def incoming_bucket(outputs):
    return outputs["IncomingBucketName"]


@pytest.fixture
def artifacts_bucket(outputs):
    return outputs["ArtifactsBucketName"]


@pytest.fixture
def load_drift_handler(monkeypatch, resolved_stack, outputs, tmp_path):
    """Import functions/drift/app.py as Lambda would, with the template's environment."""

    def load(**overrides: str):
        env = resolved_stack.function_environment("DriftFunction")
        env.update(
            TRAINING_BACKEND="local",
            LOCAL_TRAINING_COMMAND=sleep_command(0.5),
            LOCAL_TRAINING_LOG_DIR=str(tmp_path / "jobs"),
            POWERTOOLS_TRACE_DISABLED="true",
            POWERTOOLS_METRICS_NAMESPACE="FraudDetectionTest",
        )
        env.update(overrides)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return load_function_module("functions/drift", "app.lambda_handler", env)

    return load


@pytest.fixture
def champion(s3, artifacts_bucket):
    """A promoted model's reference profile and pointer, as the training job leaves them."""
    return publish_champion(s3, artifacts_bucket)


def sqs_event(bucket: str, key: str, etag: str, message_id: str = "19dd0b57-b21e-4ac1-bd88-01bbb068cb78"):
    """events/sqs-s3-put-incoming.json with this object in it, keys encoded as AWS does."""
    event = json.loads((EVENTS / "sqs-s3-put-incoming.json").read_text())
    body = json.loads(event["Records"][0]["body"])
    s3_record = body["Records"][0]["s3"]
    s3_record["bucket"]["name"] = bucket
    s3_record["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    s3_record["object"]["key"] = quote_plus(key, safe="/")
    s3_record["object"]["eTag"] = etag.strip('"')
    event["Records"][0]["body"] = json.dumps(body)
    event["Records"][0]["md5OfBody"] = hashlib.md5(event["Records"][0]["body"].encode()).hexdigest()
    event["Records"][0]["messageId"] = message_id
    return event


@pytest.fixture
def upload(s3, incoming_bucket):
    def put(key: str, body: bytes) -> str:
        return s3.put_object(Bucket=incoming_bucket, Key=key, Body=body)["ETag"].strip('"')

    return put


@pytest.fixture
def deliver(incoming_bucket):
    def invoke(handler_module, key: str, etag: str, message_id: str = "m-1"):
        return handler_module.lambda_handler(
            sqs_event(incoming_bucket, key, etag, message_id), LambdaContext(function_name="DriftFunction")
        )

    return invoke
