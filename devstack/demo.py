"""`make demo`: the whole loop, for real, on the embedded stack.

1. starts the embedded stack (moto on 127.0.0.1:4566, or AWS_ENDPOINT_URL) with the scoring
   API on http://127.0.0.1:3000;
2. gets data: the real creditcard.csv if it can be had, else synthetic (and says which);
3. trains and promotes the first model with the real training job (the first part by Time);
4. scores a few transactions, frauds among them, through POST /predict over HTTP;
5. drops a clean batch, a later labelled batch and a malformed file into the incoming bucket;
6. waits for S3 -> SQS -> the drift function and prints the reports: the later batch drifts
   and starts the training job;
7. waits for the job, prints the gate's decision, and shows /predict answering with the new
   model;
8. prints where to look. ``--keep`` (``make demo KEEP=1``) leaves the stack running.

Training uses a short recipe (``DEMO_TRAINING_ENV``: a few epochs) so that the whole demo
takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from devstack.demo_data import DemoData, demo_data
from devstack.engine import add_training_arguments, choose_training_path, docker_client
from devstack.signals import wait_for_stop_signal
from devstack.stack import DEFAULT_PORT, DEFAULT_STATE_DIR, REPO_ROOT, EmbeddedStack, free_port
from fraudlib import aws
from fraudlib.launcher import container_environment, docker_volumes
from fraudlib.layout import CHAMPION_POINTER_KEY
from fraudlib.schema import FEATURE_COLUMNS, LABEL_COLUMN
from fraudlib.synthetic import to_csv_bytes

TRAINING_ENTRYPOINT = REPO_ROOT / "training_job" / "entrypoint.py"
# A short recipe with the project's architecture: the demo shows the loop, not the quality
# (bench/train_quality.py measures that). Both jobs, the first and the retrain, read these.
DEMO_TRAINING_ENV = {
    "TRAIN_MAX_EPOCHS": "8",
    "TRAIN_PATIENCE": "8",
    "TRAIN_DISTILL_MAX_EPOCHS": "8",
    "TRAIN_DISTILL_PATIENCE": "8",
    "TRAIN_BOOTSTRAP_ROUNDS": "50",
}
DEMO_API_PORT = 3000
MODEL_CHECK_INTERVAL_S = 2
STEPS = 8


class DemoError(RuntimeError):
    """A step of the demo did not succeed."""


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # As the servers bind: a port a previous run just closed (TIME_WAIT) is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _say(text: str) -> None:
    print(text, flush=True)


def _step(number: int, text: str) -> None:
    _say(f"\n[{number}/{STEPS}] {text}")


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def _json(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _post(url: str, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _print_report(report: dict[str, Any]) -> None:
    _say(f"  {report['batch']['key']}: {report['rows']:,} rows, status {report['status'].upper()}")
    if report["status"] == "no_reference":
        _say(f"    {report['message']}")
        return
    _say(f"    rule: {report['rule']}")
    _say(f"    fired: {report['fired']}")
    top = sorted(report["features"], key=lambda f: f["statistic"], reverse=True)[:5]
    for feature in top:
        flag = "DRIFT" if feature["drifted"] else "     "
        _say(
            f"    {flag} {feature['feature']:>6} (as {feature['tested_as']}): D={feature['statistic']:.3f}"
            f" p={feature['p_value']:.2e} adjusted p={feature['adjusted_p_value']:.2e}"
        )
    if "retraining" in report:
        _say(f"    retraining: {report['retraining']['status']} (job {report['retraining']['job_id']})")


def _train_first_model(stack: EmbeddedStack, s3: Any, artifacts: str, data: DemoData) -> str:
    rows = len(data.first_training[LABEL_COLUMN])
    frauds = int(data.first_training[LABEL_COLUMN].sum())
    _step(3, f"training the first model on {rows:,} transactions ({frauds} frauds), the real training job")
    first = stack.state_dir / "first-training.csv"
    first.write_bytes(to_csv_bytes(data.first_training))
    started = time.monotonic()
    if stack.training.backend == "docker":
        _train_in_container(stack, first)
    else:
        # As a user would run it: the training entrypoint as a process (its progress shows).
        command = [sys.executable, str(TRAINING_ENTRYPOINT), "--data", str(first), "--job-id", "first-model"]
        if subprocess.run(command, check=False).returncode != 0:
            raise DemoError("the first training failed; its log is above")
    pointer = _json(s3, artifacts, CHAMPION_POINTER_KEY)
    manifest = _json(s3, artifacts, f"{pointer['bundle_prefix']}manifest.json")
    metrics, baseline = manifest["metrics"], manifest["baseline_lightgbm_metrics"]
    _say(
        f"  served model {pointer['model_version']} after {time.monotonic() - started:.0f} s: test ROC-AUC"
        f" {metrics['roc_auc']:.3f}, AUPRC {metrics['auprc']:.3f} (LightGBM {baseline['auprc']:.3f}),"
        f" threshold {manifest['threshold']:.3f}, graph {manifest['onnx']['precision']}"
    )
    return str(pointer["model_version"])


def _train_in_container(stack: EmbeddedStack, data_file: Path) -> None:
    """``docker run`` of the training image on the file, its output shown as it comes."""
    # Reads wait as long as the job is silent (LightGBM, the ONNX export): no short timeout.
    client = docker_client(timeout_s=6 * 3600)
    if client is None:
        raise DemoError("the Docker engine stopped answering")
    # The same inputs the drift function's docker launcher gives a retrain: the host network
    # (moto on 127.0.0.1), the state folder at its own path (the data file, MLflow's store).
    container = client.containers.run(
        stack.training.image,
        ["train", "--data", str(data_file), "--job-id", "first-model"],
        environment={
            **container_environment({**os.environ, **stack.function_environment("DriftFunction")}),
            "ARTIFACTS_BUCKET": stack.outputs["ArtifactsBucketName"],
            "INCOMING_BUCKET": stack.outputs["IncomingBucketName"],
            "LOCK_TABLE": stack.outputs["TrainingLockTableName"],
        },
        network_mode="host",
        volumes=docker_volumes((f"{stack.state_dir}:{stack.state_dir}",)),
        detach=True,
    )
    try:
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.write(chunk.decode("utf-8", "replace"))
        status = int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)
    if status != 0:
        raise DemoError(f"the first training's container exited with {status}; its log is above")


def _showcase_body(data: DemoData) -> dict[str, Any]:
    rows = len(data.showcase[LABEL_COLUMN])
    return {"transactions": [{name: float(data.showcase[name][i]) for name in FEATURE_COLUMNS} for i in range(rows)]}


def _score_showcase(api_url: str, data: DemoData, expected_version: str | None = None) -> str:
    status, answer = _post(f"{api_url}predict?explain=true", _showcase_body(data))
    if status != 200:
        raise DemoError(f"POST /predict answered {status}: {answer}")
    if expected_version is not None and answer["model_version"] != expected_version:
        raise DemoError(f"/predict answered with {answer['model_version']}, expected {expected_version}")
    _say(f"  POST {api_url}predict?explain=true -> 200, model {answer['model_version']}")
    for truth, prediction in zip(data.showcase[LABEL_COLUMN], answer["predictions"], strict=True):
        top = ", ".join(f"{c['feature']} {c['share']:.2f}" for c in prediction["explanation"])
        _say(
            f"    {'FRAUD' if truth else 'legit'} -> p={prediction['fraud_probability']:.4f}"
            f" {'FLAGGED' if prediction['prediction'] else 'passed '} {prediction['risk_level']:<6} (attention: {top})"
        )
    return str(answer["model_version"])


def _follow_retraining(s3: Any, artifacts: str, timeout_s: float) -> dict[str, Any] | None:
    launches = [key for key in _keys(s3, artifacts, "records/launches/") if not key.endswith("first-model.json")]
    outcome = None
    for key in launches:
        launch = _json(s3, artifacts, key)
        _say(f"  training job {launch['job_id']} ({launch['backend']}) started; {launch['handle']}")
        _say("  waiting for it: it retrains on the base dataset plus the later labelled batch")
        done = _wait(
            lambda key=key: (record := _json(s3, artifacts, key))["status"] != "started" and record,
            timeout_s,
            "the retraining job",
        )
        if done["status"] != "succeeded":
            raise DemoError(f"{done['job_id']}: {done['status']}: {done.get('error', 'see its log')}")
        verdict = "PROMOTED" if done["promoted"] else "not promoted (the champion stays)"
        _say(f"  gate: {verdict}: {done['gate_reason']}")
        _say(
            f"    model {done['model_version']}: test AUPRC {done['test_auprc']:.3f},"
            f" ROC-AUC {done['test_roc_auc']:.3f}"
        )
        outcome = done
    return outcome


def run_demo(stack: EmbeddedStack, data: DemoData, retrain_timeout_s: float) -> None:
    s3 = aws.client("s3")
    incoming = stack.outputs["IncomingBucketName"]
    artifacts = stack.outputs["ArtifactsBucketName"]
    api_url = stack.outputs["ApiUrl"]
    _step(2, f"data: {data.source}")
    first_version = _train_first_model(stack, s3, artifacts, data)

    _step(4, f"scoring {len(data.showcase[LABEL_COLUMN])} held-out transactions over HTTP (their labels on the left)")
    _wait(lambda: _post(f"{api_url}predict", _showcase_body(data))[0] == 200, 30, "the API to serve the model")
    _score_showcase(api_url, data, first_version)

    batches = {
        "incoming/clean batch.csv": to_csv_bytes(data.clean_batch),
        "incoming/later-labelled.csv.gz": to_csv_bytes(data.later_batch, compress=True),
        "incoming/broken.csv": to_csv_bytes({k: v[:500] for k, v in data.clean_batch.items()}).replace(
            b"\n", b"\nnot-a-number", 1
        ),
    }
    _step(5, f"dropping {len(batches)} files into s3://{incoming}/incoming/")
    for key, body in batches.items():
        s3.put_object(Bucket=incoming, Key=key, Body=body)
        _say(f"  put {key} ({len(body):,} bytes)")

    _step(6, "S3 -> SQS -> drift function; the reports")
    _wait(lambda: len(_keys(s3, artifacts, "reports/drift/")) >= 2, 180, "two drift reports")
    _wait(lambda: len(_keys(s3, incoming, "quarantine/")) >= 2, 60, "the quarantine report")
    _wait(lambda: len(_keys(s3, artifacts, "records/launches/")) >= 2, 60, "the training launch")
    time.sleep(1.0)  # the drifted batch's report is rewritten once its job has started
    report_keys = _keys(s3, artifacts, "reports/drift/")
    for key in report_keys:
        _print_report(_json(s3, artifacts, key))
    for key in _keys(s3, incoming, "quarantine/"):
        if key.endswith(".error.json"):
            error = _json(s3, incoming, key)["error"]
            _say(f"  QUARANTINED {key.removesuffix('.error.json')}: {error['message']}")

    _step(7, "the retraining the drift started, and the model /predict serves after it")
    outcome = _follow_retraining(s3, artifacts, retrain_timeout_s)
    served = _json(s3, artifacts, CHAMPION_POINTER_KEY)["model_version"]
    if outcome is not None and outcome["promoted"]:
        _say(f"  waiting for the scoring function to pick up {served} (it checks every {MODEL_CHECK_INTERVAL_S} s)")
        _wait(lambda: _post(f"{api_url}predict", _showcase_body(data))[1].get("model_version") == served, 60, served)
        _score_showcase(api_url, data, served)
    else:
        _say(f"  /predict keeps answering with {served}")
        _score_showcase(api_url, data, served)

    _step(8, "where to look")
    _say(f"  stack outputs:   {stack.state_dir / 'outputs.json'}")
    _say(f"  drift reports:   s3://{artifacts}/reports/drift/ ({len(report_keys)} reports)")
    _say(f"  quarantine:      s3://{incoming}/quarantine/")
    _say(f"  model bundles:   s3://{artifacts}/models/<version>/ ; served: s3://{artifacts}/{CHAMPION_POINTER_KEY}")
    _say(f"  training jobs:   s3://{artifacts}/records/launches/ ; logs under {stack.state_dir}/jobs/")
    _say("  MLflow runs:     make mlflow-ui  (http://127.0.0.1:5000)")
    _say(f"  the API:         curl -s {api_url}health ; {api_url}swagger")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack-name", default="fraud-demo")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="outputs, job logs, MLflow")
    parser.add_argument("--data", type=Path, help="the real creditcard.csv (else $CREDITCARD_CSV, the cache, ...)")
    parser.add_argument("--synthetic", action="store_true", help="use synthetic data even if the real file is there")
    parser.add_argument("--keep", action="store_true", help="leave the stack running until Ctrl-C / SIGTERM")
    parser.add_argument("--retrain-timeout", type=float, default=900.0, help="seconds to wait for the retraining")
    parser.add_argument("--verbose", action="store_true", help="show the functions' JSON logs and EMF metrics")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    try:
        training = choose_training_path(args.training, args.training_image)
    except RuntimeError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    if not args.verbose:
        # With metrics disabled Powertools never flushes, and warns about it on every call.
        warnings.filterwarnings("ignore", module="aws_lambda_powertools")
    started = time.monotonic()
    port = DEFAULT_PORT if _port_is_free(DEFAULT_PORT) else free_port()
    api_port = DEMO_API_PORT if _port_is_free(DEMO_API_PORT) else 0
    function_env = {"MODEL_CHECK_INTERVAL_S": str(MODEL_CHECK_INTERVAL_S)}
    if not args.verbose:
        function_env.update(LOG_LEVEL="ERROR", POWERTOOLS_METRICS_DISABLED="true")
    # Both training jobs (the first, a process of the demo's; the retrain that drift
    # starts, a process of the local launcher's) read these.
    os.environ.update(DEMO_TRAINING_ENV)
    stack = EmbeddedStack(
        stack_name=args.stack_name,
        port=port,
        api_port=api_port,
        state_dir=args.state_dir,
        function_env=function_env,
        training=training,
    )
    _step(1, "starting the embedded stack")
    _say(f"  training path: {training.describe()}")
    with stack:
        _say(f"  AWS endpoint {stack.endpoint_url}; scoring API {stack.outputs['ApiUrl']}")
        _say(f"  buckets {stack.outputs['IncomingBucketName']}, {stack.outputs['ArtifactsBucketName']}")
        try:
            run_demo(stack, demo_data(args.data, synthetic=args.synthetic), args.retrain_timeout)
        except (TimeoutError, DemoError) as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
        _say(f"\ndemo finished in {time.monotonic() - started:.0f} s")
        if args.keep:
            _say("the stack keeps running (KEEP=1); Ctrl-C or SIGTERM stops it")
            wait_for_stop_signal()
    return 0


if __name__ == "__main__":
    sys.exit(main())
