"""`make demo`: the ingest path, for real, on the embedded stack.

1. starts the embedded stack (moto on 127.0.0.1:4566, or AWS_ENDPOINT_URL);
2. publishes a reference profile for the served model (see below);
3. drops a clean batch, a drifted batch and a malformed file into the incoming bucket;
4. waits for S3 -> SQS -> the drift function, and prints the reports, the quarantine report
   and the training launch.

Until the training job exists (issue: training job), no model can be trained here, so the
demo publishes the reference profile of a synthetic "day 1" under the model version
``bootstrap-synthetic``, exactly as the training job will publish its own, and says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

from devstack.stack import DEFAULT_PORT, EmbeddedStack, free_port
from fraudlib import aws
from fraudlib.layout import CHAMPION_POINTER_KEY, reference_profile_key
from fraudlib.pointer import ChampionPointer
from fraudlib.profile import build_reference_profile
from fraudlib.synthetic import generate_transactions, to_csv_bytes

DAY_S = 86_400.0
BOOTSTRAP_VERSION = "bootstrap-synthetic"


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


def run_demo(stack: EmbeddedStack) -> None:
    s3 = aws.client("s3")
    incoming = stack.outputs["IncomingBucketName"]
    artifacts = stack.outputs["ArtifactsBucketName"]

    _say(
        f"\n[2/4] no training job exists yet: publishing the reference profile of 60,000 synthetic"
        f" 'day 1' transactions as model {BOOTSTRAP_VERSION!r}"
    )
    reference = generate_transactions(60_000, seed=1, duration_s=DAY_S)
    profile = build_reference_profile(reference, model_version=BOOTSTRAP_VERSION, data_hash="synthetic-seed-1")
    s3.put_object(Bucket=artifacts, Key=reference_profile_key(BOOTSTRAP_VERSION), Body=profile.to_bytes())
    pointer = ChampionPointer.for_version(BOOTSTRAP_VERSION, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    s3.put_object(Bucket=artifacts, Key=CHAMPION_POINTER_KEY, Body=pointer.to_json())

    batches = {
        "incoming/day-2 clean.csv": to_csv_bytes(generate_transactions(20_000, seed=2, start_time_s=DAY_S)),
        "incoming/day-3-drifted.csv": to_csv_bytes(
            generate_transactions(20_000, seed=3, start_time_s=2 * DAY_S, shift={"V4": 0.8, "Amount": 0.6})
        ),
        "incoming/day-3-broken.csv": to_csv_bytes(generate_transactions(500, seed=4)).replace(b"\n1", b"\nx1", 1),
    }
    _say(f"\n[3/4] dropping {len(batches)} files into s3://{incoming}/incoming/")
    for key, body in batches.items():
        s3.put_object(Bucket=incoming, Key=key, Body=body)
        _say(f"  put {key} ({len(body):,} bytes)")

    _say("\n[4/4] S3 -> SQS -> drift function; waiting for the reports")
    _wait(lambda: len(_keys(s3, artifacts, "reports/drift/")) >= 2, 120, "two drift reports")
    _wait(lambda: _keys(s3, incoming, "quarantine/"), 60, "the quarantine report")
    _wait(lambda: _keys(s3, artifacts, "records/launches/"), 60, "the training launch")
    time.sleep(1.0)  # the drifted batch's report is rewritten once its job has started
    for key in _keys(s3, artifacts, "reports/drift/"):
        _print_report(_json(s3, artifacts, key))
    for key in _keys(s3, incoming, "quarantine/"):
        if key.endswith(".error.json"):
            error = _json(s3, incoming, key)["error"]
            _say(f"  QUARANTINED {key.removesuffix('.error.json')}: {error['message']}")
    for key in _keys(s3, artifacts, "records/launches/"):
        launch = _json(s3, artifacts, key)
        _say(f"  training job {launch['job_id']} ({launch['backend']}): {launch['status']}, {launch['handle']}")
        log_path = launch["handle"].rpartition("log:")[2]
        if launch["status"] == "failed" and log_path:
            tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-1:]
            _say(f"    last line of its log: {tail[0] if tail else '(empty)'}")
    _say(f"\noutputs: {stack.state_dir / 'outputs.json'}; reports: s3://{artifacts}/reports/drift/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack-name", default="fraud-demo")
    parser.add_argument("--verbose", action="store_true", help="show the functions' JSON logs and EMF metrics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    port = DEFAULT_PORT if _port_is_free(DEFAULT_PORT) else free_port()
    quiet = {} if args.verbose else {"LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"}
    stack = EmbeddedStack(stack_name=args.stack_name, port=port, function_env=quiet)
    _say("[1/4] starting the embedded stack")
    with stack:
        _say(
            f"  endpoint {stack.endpoint_url}; buckets {stack.outputs['IncomingBucketName']},"
            f" {stack.outputs['ArtifactsBucketName']}"
        )
        try:
            run_demo(stack)
        except TimeoutError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
