"""The scoring function through its real handler, with API Gateway REST proxy events, against
the emulated S3 and real bundles from the training job."""

import base64
import copy
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from pytorch_tabnet.tab_model import TabNetClassifier

from devstack.poller import LambdaContext
from devstack.stack import load_function_module
from fraud_training.onnx_export import explain_network, reference_network, torch_probabilities
from fraud_training.tabnet_model import served_network
from fraudlib.layout import CHAMPION_POINTER_KEY
from fraudlib.model import FraudModel, raw_column_of
from fraudlib.pointer import ChampionPointer
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.scoring import EXAMPLE_FEATURES, EXAMPLE_TRANSACTION
from fraudlib.synthetic import generate_transactions
from tests.helpers import publish_bundle

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture
def load_scoring(monkeypatch, resolved_stack, outputs):
    """Import functions/scoring/app.py as Lambda would (a cold start), with the template's
    environment."""

    def load(**overrides: str):
        env = resolved_stack.function_environment("ScoringFunction")
        env.update(POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_NAMESPACE="FraudDetectionTest")
        env.update(overrides)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return load_function_module("functions/scoring", "app.lambda_handler", env)

    return load


@pytest.fixture
def versions(trained_bundles):
    return list(trained_bundles)


@pytest.fixture
def promoted(s3, artifacts_bucket, trained_bundles, versions):
    """The first trained bundle published and promoted in this test's stack."""
    publish_bundle(s3, artifacts_bucket, versions[0], trained_bundles[versions[0]])
    return versions[0]


def request(method: str, path: str, body=None, *, query=None, headers=None, raw: str | None = None):
    """events/api-predict.json with this method, path, body and query."""
    event = copy.deepcopy(json.loads((EVENTS / "api-predict.json").read_text()))
    event.update(httpMethod=method, path=path, resource=path)
    event["requestContext"].update(httpMethod=method, resourcePath=path, path=f"/prod{path}")
    if headers is not None:
        event["headers"] = headers
        event["multiValueHeaders"] = {name: [value] for name, value in headers.items()}
    event["body"] = raw if raw is not None else (None if body is None else json.dumps(body))
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = None if query is None else {k: [v] for k, v in query.items()}
    return event


def call(app, event):
    response = app.lambda_handler(event, LambdaContext(function_name="ScoringFunction"))
    body = response["body"]
    return response["statusCode"], (json.loads(body) if body and body.lstrip()[:1] in "{[" else body)


def _raw_rows(n: int, seed: int) -> np.ndarray:
    columns = generate_transactions(n, seed=seed, fraud_rate=0.05)
    return np.column_stack([columns[name] for name in FEATURE_COLUMNS])


def test_no_model_promoted_is_a_503_not_an_error(load_scoring):
    app = load_scoring()
    status, body = call(app, request("POST", "/predict", {"features": EXAMPLE_FEATURES}))
    assert status == 503 and "no model has been promoted" in body["message"]
    status, body = call(app, request("GET", "/health"))
    assert status == 503 and body["status"] == "no_model" and body["model_version"] is None


def test_sample_event_scores_with_the_promoted_model(load_scoring, promoted):
    app = load_scoring()
    status, body = call(app, json.loads((EVENTS / "api-predict.json").read_text()))
    assert status == 200, body
    assert set(body) == {"prediction", "fraud_probability", "risk_level", "model_version", "threshold"}
    assert body["model_version"] == promoted
    assert 0.0 <= body["fraud_probability"] <= 1.0
    assert body["prediction"] == int(body["fraud_probability"] >= body["threshold"])
    assert body["risk_level"] in ("LOW", "MEDIUM", "HIGH")
    status, health = call(app, json.loads((EVENTS / "api-health.json").read_text()))
    assert status == 200 and health["status"] == "ok" and health["model_version"] == promoted
    assert health["loaded_at"] and health["pointer_checked_at"]


def test_api_probabilities_equal_the_torch_model(load_scoring, promoted, trained_bundles, tmp_path):
    """Served (ONNX Runtime, stored preprocessing) == TabNet's saved network run by torch in
    float64, within 1e-5, for seed, named and batch bodies; explanations too."""
    app = load_scoring()
    files = trained_bundles[promoted]
    (tmp_path / "tabnet.zip").write_bytes(files["tabnet.zip"])
    tabnet = TabNetClassifier()
    tabnet.load_model(str(tmp_path / "tabnet.zip"))
    served = FraudModel.from_bundle_files(files["model.onnx"], files["preprocessing.json"], files["manifest.json"])
    raw = _raw_rows(200, seed=5)
    inputs = served.preprocessor.transform(raw)
    # TabNet's network as the bundle serves it (behind its manifest's calibration).
    calibration = json.loads(files["manifest.json"])["calibration"]
    expected = torch_probabilities(reference_network(served_network(tabnet.network, calibration)), inputs)

    status, batch = call(
        app,
        request("POST", "/predict", {"transactions": [dict(zip(FEATURE_COLUMNS, r, strict=True)) for r in raw]}),
    )
    assert status == 200 and batch["count"] == 200 and batch["model_version"] == promoted
    answered = np.array([p["fraud_probability"] for p in batch["predictions"]])
    assert np.max(np.abs(answered - expected)) <= 1e-5
    for i in (0, 57, 199):  # the seed's body and a named transaction answer as in the batch
        _, single = call(app, request("POST", "/predict", {"features": raw[i].tolist()}))
        _, named = call(
            app, request("POST", "/predict", {"transaction": dict(zip(FEATURE_COLUMNS, raw[i], strict=True))})
        )
        assert single == named == batch["predictions"][i]

    status, explained = call(
        app,
        request(
            "POST",
            "/predict",
            {"transactions": [dict(zip(FEATURE_COLUMNS, r, strict=True)) for r in raw[:20]]},
            query={"explain": "true"},
        ),
    )
    assert status == 200
    # TabNet's attention shares from torch, summed per raw column (hour_sin/cos -> Time ...).
    shares = torch_probabilities(explain_network(tabnet.network, None), inputs[:20])
    for row, answer in enumerate(explained["predictions"]):
        contributions = answer["explanation"]
        assert len(contributions) == 3
        assert [c["share"] for c in contributions] == sorted((c["share"] for c in contributions), reverse=True)
        for contribution in contributions:
            columns = [
                i
                for i, name in enumerate(served.preprocessor.output_names)
                if raw_column_of(name) == contribution["feature"]
            ]
            assert contribution["share"] == pytest.approx(shares[row, columns].sum(), abs=1e-5)
        assert answer["fraud_probability"] == batch["predictions"][row]["fraud_probability"]


def test_high_risk_and_fraud_decisions_follow_the_threshold(load_scoring, promoted, trained_bundles):
    app = load_scoring()
    manifest = json.loads(trained_bundles[promoted]["manifest.json"])
    raw = _raw_rows(1000, seed=8)
    status, body = call(
        app, request("POST", "/predict", {"transactions": [dict(zip(FEATURE_COLUMNS, r, strict=True)) for r in raw]})
    )
    assert status == 200
    cutoffs = manifest["risk_cutoffs"]
    for answer in body["predictions"]:
        p = answer["fraud_probability"]
        expected = "HIGH" if p >= cutoffs["high"] else "MEDIUM" if p >= cutoffs["medium"] else "LOW"
        assert answer["risk_level"] == expected and answer["prediction"] == int(p >= manifest["threshold"])
    assert {a["prediction"] for a in body["predictions"]} == {0, 1}  # the synthetic frauds are found


@pytest.mark.parametrize(
    ("event_args", "status", "field", "words"),
    [
        (("POST", "/predict", {"features": [1.0] * 29}), 422, "features", "exactly 30 numbers"),
        (("POST", "/predict", {"transaction": {**EXAMPLE_TRANSACTION, "V9": "x"}}), 422, "transaction.V9", "number"),
        (("POST", "/predict", {"transactions": []}), 422, "transactions", "at least one"),
        (("POST", "/predict", {"transactions": [EXAMPLE_TRANSACTION] * 1001}), 422, "transactions", "at most 1000"),
        (("POST", "/predict", {"transaction": {**EXAMPLE_TRANSACTION, "extra": 1}}), 422, "transaction.extra", "known"),
        (
            ("POST", "/predict", {"features": EXAMPLE_FEATURES}, {"explain": "perhaps"}),
            422,
            "query parameter explain",
            "",
        ),
    ],
)
def test_bad_requests_are_4xx_naming_the_field(load_scoring, promoted, event_args, status, field, words):
    app = load_scoring()
    method, path, body, *query = event_args
    answered, payload = call(app, request(method, path, body, query=query[0] if query else None))
    assert answered == status, payload
    assert any(e["field"] == field and words in e["problem"] for e in payload["errors"]), payload


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ('{"features": [NaN' + ", 0" * 29 + "]}", "finite"),
        ('{"features": [Infinity' + ", 0" * 29 + "]}", "finite"),
        ('{"features": [1e999' + ", 0" * 29 + "]}", "finite"),
        ('{"features": [1, 2,', "not valid JSON"),
        ("", "is required: a JSON object with one of"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_raw_bodies_that_are_not_numbers_or_not_json(load_scoring, promoted, raw, problem):
    app = load_scoring()
    status, payload = call(app, request("POST", "/predict", raw=raw))
    assert status in (400, 422), payload
    assert any(problem in e["problem"] for e in payload["errors"]), payload


def test_transport_level_refusals(load_scoring, promoted):
    app = load_scoring(MAX_PREDICT_BODY_BYTES="2000")
    big = {"transactions": [EXAMPLE_TRANSACTION] * 5}
    status, payload = call(app, request("POST", "/predict", big))
    assert status == 413 and "at most 2000" in payload["message"]
    encoded = base64.b64encode(json.dumps(big).encode()).decode()
    event = request("POST", "/predict", raw=encoded)
    event["isBase64Encoded"] = True
    assert call(app, event)[0] == 413
    form = request("POST", "/predict", headers={"Content-Type": "application/x-www-form-urlencoded"}, raw="a=1")
    status, payload = call(app, form)
    assert status == 415 and "application/json" in payload["message"]
    charset = request(
        "POST", "/predict", {"features": EXAMPLE_FEATURES}, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert call(app, charset)[0] == 200
    status, payload = call(app, request("GET", "/nowhere"))
    assert status == 404 and "GET /nowhere" in payload["message"]
    assert call(app, request("GET", "/predict"))[0] in (404, 405)


def test_openapi_document_and_swagger_ui(load_scoring):
    app = load_scoring()
    status, document = call(app, request("GET", "/openapi.json"))
    assert status == 200
    predict = document["paths"]["/predict"]["post"]
    assert {"200", "413", "415", "422", "503"} <= set(predict["responses"])
    assert any(p["name"] == "explain" for p in predict["parameters"])
    assert "/health" in document["paths"]
    schemas = json.dumps(document["components"]["schemas"])
    assert '"examples"' in schemas and "V28" in schemas
    response = app.lambda_handler(request("GET", "/swagger"), LambdaContext(function_name="ScoringFunction"))
    html = response["body"]
    assert response["statusCode"] == 200 and response["multiValueHeaders"]["Content-Type"] == ["text/html"]
    assert "SwaggerUIBundle" in html and '"/predict"' in html  # the UI, and this API's document inlined
    assert "</script" not in html.split("SwaggerUIBundle(")[-1].split("</script>")[0]  # document cannot end it
    assert call(app, request("GET", "/swagger", query={"format": "json"})) == (200, document)


def test_new_champion_is_picked_up_after_the_check_interval(
    load_scoring, s3, artifacts_bucket, trained_bundles, versions
):
    publish_bundle(s3, artifacts_bucket, versions[0], trained_bundles[versions[0]])
    app = load_scoring(MODEL_CHECK_INTERVAL_S="3600")
    seed_body = {"features": EXAMPLE_FEATURES}
    assert call(app, request("POST", "/predict", seed_body))[1]["model_version"] == versions[0]
    publish_bundle(s3, artifacts_bucket, versions[1], trained_bundles[versions[1]])
    # Within the interval the loaded model keeps answering (no S3 call per request).
    assert call(app, request("POST", "/predict", seed_body))[1]["model_version"] == versions[0]
    app.holder._next_check = 0.0  # the interval has passed
    assert call(app, request("POST", "/predict", seed_body))[1]["model_version"] == versions[1]
    assert call(app, request("GET", "/health"))[1]["model_version"] == versions[1]


@pytest.mark.parametrize("damage", ["garbage onnx", "missing onnx", "wrong version in manifest"])
def test_broken_bundle_is_ignored_and_the_served_model_kept(
    load_scoring, s3, artifacts_bucket, trained_bundles, versions, damage
):
    publish_bundle(s3, artifacts_bucket, versions[0], trained_bundles[versions[0]])
    app = load_scoring(MODEL_CHECK_INTERVAL_S="0")
    broken = dict(trained_bundles[versions[1]])
    if damage == "garbage onnx":
        broken["model.onnx"] = b"not a graph"
    elif damage == "missing onnx":
        del broken["model.onnx"]
    else:
        broken["manifest.json"] = json.dumps({**json.loads(broken["manifest.json"]), "model_version": "v0"}).encode()
    publish_bundle(s3, artifacts_bucket, "broken", broken)
    for _ in range(3):  # checked on every request (interval 0); never fails a request
        status, body = call(app, request("POST", "/predict", {"features": EXAMPLE_FEATURES}))
        assert status == 200 and body["model_version"] == versions[0]
    status, health = call(app, request("GET", "/health"))
    assert health["model_version"] == versions[0] and health["last_error"].startswith("broken:")
    # A good promotion afterwards is loaded.
    publish_bundle(s3, artifacts_bucket, versions[1], trained_bundles[versions[1]])
    assert call(app, request("POST", "/predict", {"features": EXAMPLE_FEATURES}))[1]["model_version"] == versions[1]


def test_swap_under_concurrent_scoring_never_serves_half_a_model(s3, artifacts_bucket, trained_bundles, versions):
    """Threads score through one holder while it swaps models back and forth: every answer
    comes whole from one of the two models (the same probabilities as that model alone)."""
    from fraudlib.serving import ChampionHolder
    from fraudlib.store import ArtifactStore

    publish_bundle(s3, artifacts_bucket, versions[1], trained_bundles[versions[1]], promote=False)
    publish_bundle(s3, artifacts_bucket, versions[0], trained_bundles[versions[0]])
    holder = ChampionHolder(ArtifactStore(s3, artifacts_bucket), check_interval_s=0.0)
    holder.refresh(wait=True)  # the cold start
    raw = _raw_rows(64, seed=21)
    reference = {}
    for version in versions:
        files = trained_bundles[version]
        model = FraudModel.from_bundle_files(files["model.onnx"], files["preprocessing.json"], files["manifest.json"])
        reference[version] = model.predict_proba(raw)
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def score() -> None:
        while not stop.is_set():
            loaded = holder.current()
            probabilities = loaded.model.predict_proba(raw)
            seen.add(loaded.model.model_version)
            if not np.allclose(probabilities, reference[loaded.model.model_version], atol=1e-12):
                failures.append(loaded.model.model_version)

    threads = [threading.Thread(target=score) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(6):
        version = versions[(i + 1) % 2]
        s3.put_object(
            Bucket=artifacts_bucket,
            Key=CHAMPION_POINTER_KEY,
            Body=ChampionPointer.for_version(version, "2026-12-03T00:00:00+00:00").to_json(),
        )
        holder.refresh(wait=True)
        assert holder.status().model_version == version
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures
    assert seen == set(versions)
