"""`make demo`: the loop so far, for real, on the embedded stack.

1. starts the embedded stack (moto on 127.0.0.1:4566, or AWS_ENDPOINT_URL);
2. trains and promotes the first model with the real training job (synthetic "day 1");
3. drops a clean batch, a drifted labelled batch and a malformed file into the incoming bucket;
4. waits for S3 -> SQS -> the drift function, prints the reports, the quarantine report and
   the training launch, then waits for the retraining job the drift started and prints its
   outcome (promoted or kept the champion, and why).

Training uses a short recipe (``TRAIN_PRESET=smoke``, 15 epochs) so that the demo takes a
few minutes on two cores.
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
from typing import Any

from devstack.stack import DEFAULT_PORT, REPO_ROOT, EmbeddedStack, free_port
from fraudlib import aws
from fraudlib.layout import CHAMPION_POINTER_KEY
from fraudlib.synthetic import generate_transactions, to_csv_bytes

DAY_S = 86_400.0
TRAINING_ENTRYPOINT = REPO_ROOT / "training_job" / "entrypoint.py"
DEMO_TRAINING_ENV = {"TRAIN_PRESET": "smoke", "TRAIN_MAX_EPOCHS": "15", "TRAIN_PATIENCE": "15"}


class DemoError(RuntimeError):
    """A step of the demo did not succeed."""


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _say(text: str) -> None:
    print(text, flush=True)


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def _json(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


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


def _train_first_model(stack: EmbeddedStack, s3: Any, artifacts: str) -> None:
    _say("\n[2/4] training the first model on 20,000 synthetic 'day 1' transactions (the real job)")
    first = stack.state_dir / "day-1.csv"
    first.write_bytes(to_csv_bytes(generate_transactions(20_000, seed=1, fraud_rate=0.01, duration_s=DAY_S)))
    # As a user would run it: the training entrypoint as a process (its progress shows).
    command = [sys.executable, str(TRAINING_ENTRYPOINT), "--data", str(first), "--job-id", "first-model"]
    if subprocess.run(command, check=False).returncode != 0:
        raise DemoError("the first training failed; its log is above")
    pointer = _json(s3, artifacts, CHAMPION_POINTER_KEY)
    manifest = _json(s3, artifacts, f"{pointer['bundle_prefix']}manifest.json")
    metrics, baseline = manifest["metrics"], manifest["baseline_lightgbm_metrics"]
    _say(
        f"  served model {pointer['model_version']}: test ROC-AUC {metrics['roc_auc']:.3f}, AUPRC"
        f" {metrics['auprc']:.3f} (LightGBM {baseline['auprc']:.3f}), threshold {manifest['threshold']:.3f}"
    )


def _follow_retraining(s3: Any, artifacts: str) -> None:
    launches = [key for key in _keys(s3, artifacts, "records/launches/") if not key.endswith("first-model.json")]
    for key in launches:
        launch = _json(s3, artifacts, key)
        _say(f"  training job {launch['job_id']} ({launch['backend']}) started; {launch['handle']}")
        _say("  waiting for it: it retrains on the base dataset plus the drifted labelled batch")
        done = _wait(
            lambda key=key: (record := _json(s3, artifacts, key))["status"] != "started" and record,
            900,
            "the retraining job",
        )
        if done["status"] != "succeeded":
            _say(f"  {done['job_id']}: {done['status']}: {done.get('error', 'see its log')}")
            continue
        verdict = "PROMOTED" if done["promoted"] else "not promoted"
        _say(f"  {done['job_id']}: {verdict}: {done['gate_reason']}")
        _say(
            f"    model {done['model_version']}: test AUPRC {done['test_auprc']:.3f},"
            f" ROC-AUC {done['test_roc_auc']:.3f}"
        )
    _say(f"  served model now: {_json(s3, artifacts, CHAMPION_POINTER_KEY)['model_version']}")


def run_demo(stack: EmbeddedStack) -> None:
    s3 = aws.client("s3")
    incoming = stack.outputs["IncomingBucketName"]
    artifacts = stack.outputs["ArtifactsBucketName"]
    _train_first_model(stack, s3, artifacts)

    batches = {
        "incoming/day-2 clean.csv": to_csv_bytes(
            generate_transactions(20_000, seed=2, start_time_s=DAY_S, labelled=False)
        ),
        "incoming/day-3-drifted.csv": to_csv_bytes(
            generate_transactions(
                20_000, seed=3, fraud_rate=0.01, start_time_s=2 * DAY_S, shift={"V4": 0.8, "Amount": 0.6}
            )
        ),
        "incoming/day-3-broken.csv": to_csv_bytes(generate_transactions(500, seed=4)).replace(b"\n1", b"\nx1", 1),
    }
    _say(f"\n[3/4] dropping {len(batches)} files into s3://{incoming}/incoming/")
    for key, body in batches.items():
        s3.put_object(Bucket=incoming, Key=key, Body=body)
        _say(f"  put {key} ({len(body):,} bytes)")

    _say("\n[4/4] S3 -> SQS -> drift function; waiting for the reports")
    _wait(lambda: len(_keys(s3, artifacts, "reports/drift/")) >= 2, 120, "two drift reports")
    _wait(lambda: len(_keys(s3, incoming, "quarantine/")) >= 2, 60, "the quarantine report")
    _wait(lambda: len(_keys(s3, artifacts, "records/launches/")) >= 2, 60, "the training launch")
    time.sleep(1.0)  # the drifted batch's report is rewritten once its job has started
    for key in _keys(s3, artifacts, "reports/drift/"):
        _print_report(_json(s3, artifacts, key))
    for key in _keys(s3, incoming, "quarantine/"):
        if key.endswith(".error.json"):
            error = _json(s3, incoming, key)["error"]
            _say(f"  QUARANTINED {key.removesuffix('.error.json')}: {error['message']}")
    _follow_retraining(s3, artifacts)
    _say(
        f"\noutputs: {stack.state_dir / 'outputs.json'}; reports: s3://{artifacts}/reports/drift/;"
        " MLflow runs: make mlflow-ui"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack-name", default="fraud-demo")
    parser.add_argument("--verbose", action="store_true", help="show the functions' JSON logs and EMF metrics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    port = DEFAULT_PORT if _port_is_free(DEFAULT_PORT) else free_port()
    quiet = {} if args.verbose else {"LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"}
    # Both training jobs (the first, in-process; the retrain that drift starts, a
    # subprocess) read these.
    os.environ.update(DEMO_TRAINING_ENV)
    stack = EmbeddedStack(stack_name=args.stack_name, port=port, function_env=quiet)
    _say("[1/4] starting the embedded stack")
    with stack:
        _say(
            f"  endpoint {stack.endpoint_url}; buckets {stack.outputs['IncomingBucketName']},"
            f" {stack.outputs['ArtifactsBucketName']}"
        )
        try:
            run_demo(stack)
        except (TimeoutError, DemoError) as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
