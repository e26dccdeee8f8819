"""Scoring function: API Gateway (REST, proxy) -> fraudlib.scoring.

An adapter only. The model is loaded at cold start (module scope) and held by a
``ChampionHolder``, which looks at the champion pointer at most every
``MODEL_CHECK_INTERVAL_S`` seconds and swaps in a newly promoted model whole. Every bad
request is answered with a 4xx JSON body naming the field and the problem; nothing here
answers a client with a traceback.
"""

import functools
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer, event_handler
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.utilities.typing import LambdaContext

from fraudlib import aws
from fraudlib.config import ScoringSettings
from fraudlib.model import RISK_LEVELS
from fraudlib.scoring import Prediction, answer_json, describe_errors, parse_request_json, predict, request_model
from fraudlib.serving import ChampionHolder
from fraudlib.store import ArtifactStore

logger = Logger()
tracer = Tracer()
# A metric set of this module's own: Powertools' default is one set per process, which the
# embedded stack (several environments and both functions in one process) would share.
metrics = Metrics(provider=AmazonCloudWatchEMFProvider())

# Cold start: settings fail here naming the variable; the model is loaded now, not on the
# first request (a failure to load is logged and answered with 503 until a model loads).
settings = ScoringSettings.from_env(os.environ)
holder = ChampionHolder(
    ArtifactStore(aws.client("s3"), settings.artifacts_bucket),
    settings.model_check_interval_s,
    threads=settings.inference_threads,
)
holder.refresh(wait=True)
PredictRequest = request_model(settings.max_batch)

API_DESCRIPTION = (
    "Fraud probability, decision and risk level for card transactions (Time, V1..V28, Amount), "
    "from the TabNet model promoted by the training job."
)
OPENAPI = {"title": "Fraud scoring API", "version": "1.0.0", "description": API_DESCRIPTION}
app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=parse_request_json)
# The Swagger UI is served by a route of our own (below), not Powertools' enable_swagger:
# that imports Powertools' OpenAPI model classes at cold start, 67 ms measured of a 0.5 s budget,
# for a page few callers open. Here they are imported by the first request for the page.
SWAGGER_UI_ASSETS = Path(event_handler.__file__).parent / "openapi" / "swagger_ui"

JSON = "application/json"


def _error_body(message: str, errors: list[dict[str, str]] | None = None) -> str:
    body: dict[str, Any] = {"message": message}
    if errors:
        body["errors"] = errors
    return json.dumps(body)


def _error(status: int, message: str, errors: list[dict[str, str]] | None = None) -> Response:
    return Response(status_code=status, content_type=JSON, body=_error_body(message, errors))


@app.exception_handler(RequestValidationError)
def _invalid_request(error: RequestValidationError) -> Response:
    errors = error.errors()
    if any(item.get("type") == "json_invalid" for item in errors):
        return _error(400, "the request body is not valid JSON", describe_errors(errors))
    return _error(422, "the request is not valid", describe_errors(errors))


@app.not_found
def _no_route(_: Exception) -> Response:
    event = app.current_event
    return _error(404, f"no route for {event.http_method} {event.path}; see /openapi.json")


@app.post(
    "/predict",
    summary="Score one transaction or a batch",
    description="Body: exactly one of `features` (30 numbers: Time, V1..V28, Amount), `transaction` "
    "(named fields) or `transactions` (a list). `?explain=true` adds the top features by TabNet attention.",
    responses={
        200: {"description": "one prediction, or `predictions` for a batch", "content": {JSON: {"model": Prediction}}},
        400: {"description": "body is not JSON"},
        413: {"description": "body too large"},
        415: {"description": "content type is not application/json"},
        422: {"description": "a field is missing, extra, not a finite number, or the batch size is wrong"},
        503: {"description": "no model has been promoted yet"},
    },
)
@tracer.capture_method
def predict_route(
    request: Annotated[PredictRequest, Body()],  # type: ignore[valid-type]
    explain: Annotated[bool, Query(description="add the top features by TabNet attention")] = False,
):  # no return annotation: Powertools would validate the answer again
    started = time.perf_counter()
    loaded = holder.current()  # taken once: a swap during this request does not change it
    if loaded is None:
        return _error(503, "no model has been promoted yet: train the first model (make train) and retry")
    model = loaded.model
    if explain and not model.explainable:
        return _error(409, f"model {model.model_version} was exported without an explanation graph")
    features = request.feature_matrix()
    answers = predict(model, features, settings.explain_top if explain else None)

    metrics.add_dimension(name="model_version", value=model.model_version)
    metrics.add_metric(name="PredictLatency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1e3)
    metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=len(answers))
    for level in RISK_LEVELS:
        count = sum(1 for answer in answers if answer["risk_level"] == level)
        metrics.add_metric(name=f"Predictions{level.title()}", unit=MetricUnit.Count, value=count)
    document = (
        {"model_version": model.model_version, "count": len(answers), "predictions": answers}
        if request.is_batch
        else answers[0]
    )
    # Serialised here: given a dict, Powertools would walk it with its generic encoder
    # (~25 ms for 1,000 answers) before json.dumps.
    return Response(status_code=200, content_type=JSON, body=answer_json(document))


@app.get("/health", summary="Which model is served, when it was loaded and when the pointer was checked")
def health_route():
    loaded = holder.current()
    status = holder.status()
    body = {"status": "ok" if loaded is not None else "no_model", **status.__dict__}
    return Response(status_code=200 if loaded else 503, content_type=JSON, body=json.dumps(body))


@app.get("/openapi.json", include_in_schema=False)
def openapi_route():
    return Response(status_code=200, content_type=JSON, body=_openapi_document())


@app.get("/swagger", include_in_schema=False)
def swagger_route():
    """Swagger UI over this API's OpenAPI document, its scripts inlined (as Powertools'
    own page does: no CDN needed); ``?format=json`` answers the document itself."""
    if (app.current_event.query_string_parameters or {}).get("format") == "json":
        return Response(status_code=200, content_type=JSON, body=_openapi_document())
    return Response(status_code=200, content_type="text/html", body=_swagger_page())


@functools.cache
def _openapi_document() -> str:
    return app.get_openapi_json_schema(**OPENAPI)


@functools.cache
def _swagger_page() -> str:
    from aws_lambda_powertools.event_handler.openapi.swagger_ui import generate_swagger_html

    # "</" escaped so that the document cannot close the page's <script> element.
    spec = _openapi_document().replace("</", "<\\/")
    script = (SWAGGER_UI_ASSETS / "swagger-ui-bundle.min.js").read_text(encoding="utf-8")
    style = (SWAGGER_UI_ASSETS / "swagger-ui.min.css").read_text(encoding="utf-8")
    return generate_swagger_html(spec, script, style, swagger_base_url="", oauth2_config=None)


def _header(event: dict[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return value
    return None


def _reject_before_validation(event: dict[str, Any]) -> tuple[int, str] | None:
    """Size and content type, checked before the body is parsed (Powertools would parse a
    form body, and would read any size)."""
    if event.get("httpMethod") != "POST":
        return None
    body = event.get("body") or ""
    size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode("utf-8"))
    if size > settings.max_body_bytes:
        return 413, f"the request body has {size} bytes; at most {settings.max_body_bytes} are accepted"
    content_type = _header(event, "content-type")
    if content_type is not None and content_type.split(";")[0].strip().lower() != JSON:
        return 415, f"content type {content_type!r} is not accepted; send application/json"
    return None


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    rejected = _reject_before_validation(event)
    if rejected is not None:
        status, message = rejected
        return {
            "statusCode": status,
            "headers": {"Content-Type": JSON},
            "body": _error_body(message),
            "isBase64Encoded": False,
        }
    return app.resolve(event, context)
