"""The scoring API over HTTP on the embedded stack: the local API Gateway adapter, several
execution environments, and a promotion while clients are scoring."""

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from devstack.stack import EmbeddedStack
from fraudlib import aws
from fraudlib.scoring import EXAMPLE_FEATURES, EXAMPLE_TRANSACTION
from tests.helpers import publish_bundle, wait_for

pytestmark = pytest.mark.e2e
CHECK_INTERVAL_S = 1.0


@pytest.fixture
def api(aws_endpoint, stack_name, tmp_path):
    stack = EmbeddedStack(
        stack_name=stack_name,
        state_dir=tmp_path / ".stack",
        api_port=0,
        api_environments=3,
        function_env={"MODEL_CHECK_INTERVAL_S": str(CHECK_INTERVAL_S)},
    )
    with stack:
        yield stack


def http(url: str, body: bytes | None = None, content_type: str = "application/json", method: str | None = None):
    headers = {"Content-Type": content_type} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read()


def predict(url: str, document) -> tuple[int, dict]:
    status, _, body = http(url + "predict", json.dumps(document).encode())
    return status, json.loads(body)


def test_http_requests_and_errors(api, trained_bundles):
    url = api.outputs["ApiUrl"]
    assert predict(url, {"features": EXAMPLE_FEATURES})[0] == 503
    version = next(iter(trained_bundles))
    publish_bundle(aws.client("s3"), api.outputs["ArtifactsBucketName"], version, trained_bundles[version])
    assert wait_for(lambda: predict(url, {"features": EXAMPLE_FEATURES})[0] == 200, timeout_s=30)

    status, body = predict(url, {"transactions": [EXAMPLE_TRANSACTION] * 3})
    assert status == 200 and body["count"] == 3 and body["model_version"] == version
    status, content_type, raw = http(
        url + "predict?explain=true", json.dumps({"transaction": EXAMPLE_TRANSACTION}).encode()
    )
    assert status == 200 and content_type == "application/json"
    assert len(json.loads(raw)["explanation"]) == 3
    status, _, raw = http(url + "predict", b"Time=1", content_type="application/x-www-form-urlencoded")
    assert status == 415
    status, _, raw = http(url + "predict", b"{not json")
    assert status == 400 and json.loads(raw)["errors"][0]["field"] == "body"
    status, body = predict(url, {"features": EXAMPLE_FEATURES[:10]})
    assert status == 422 and body["errors"][0]["field"] == "features"
    status, _, raw = http(url + "nowhere")
    assert status == 404 and json.loads(raw)["message"].startswith("no route for GET /nowhere")
    status, _, raw = http(url + "openapi.json")
    assert status == 200 and "/predict" in json.loads(raw)["paths"]
    status, content_type, raw = http(url + "health")
    assert status == 200 and json.loads(raw)["model_version"] == version


def test_promotion_while_clients_score_fails_no_request(api, trained_bundles):
    """Four clients score continuously while a new model is promoted: every request answers
    200, and after the check interval every environment answers with the new model."""
    url = api.outputs["ApiUrl"]
    s3, bucket = aws.client("s3"), api.outputs["ArtifactsBucketName"]
    old, new = list(trained_bundles)
    publish_bundle(s3, bucket, new, trained_bundles[new], promote=False)
    publish_bundle(s3, bucket, old, trained_bundles[old])
    assert wait_for(lambda: predict(url, {"features": EXAMPLE_FEATURES})[1].get("model_version") == old, timeout_s=30)

    answers: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status, body = predict(url, {"transactions": [EXAMPLE_TRANSACTION] * 20})
            answers.append((time.monotonic(), status, body.get("model_version")))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(1.0)
    publish_bundle(s3, bucket, new, trained_bundles[new])  # the pointer switch
    promoted_at = time.monotonic()
    time.sleep(CHECK_INTERVAL_S * 4 + 2.0)
    stop.set()
    for thread in clients:
        thread.join()

    assert answers and all(status == 200 for _, status, _ in answers), {s for _, s, _ in answers}
    assert {version for _, _, version in answers} == {old, new}
    # Every environment had checked the pointer within the interval (plus a load) after it
    # changed; from then on only the new model answers.
    settled = promoted_at + CHECK_INTERVAL_S + 2.0
    assert all(version == new for at, _, version in answers if at > settled)
    assert api._apis[0].pool.created >= 2  # concurrent requests were spread over environments
