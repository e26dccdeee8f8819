"""Container figures: image sizes, build times, and `sam local` cold and warm invocations.

    make bench-containers              (sets the engine up first)
    .venv/bin/python bench/container_bench.py [--skip-builds] [--warm-calls 5]

* builds (unless --skip-builds): the scoring and training images from their Dockerfiles with
  ``docker build --no-cache`` (every layer built again; base images and PyPI's answers are
  what the machine has), and ``sam build`` as a user runs it (its layer cache warm);
* sizes of the base images, the scoring image and the training image;
* ``sam local invoke`` (a new container per call: the cold path) of ScoringFunction and
  DriftFunction, wall time of the command and the REPORT line's duration;
* ``sam local start-lambda --warm-containers EAGER`` and N invocations of each function
  through the Lambda API (the container stays: the warm path), median.

Against a moto server on 0.0.0.0 of a free port, with a small model trained in-process. The
last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "training_job")]

from devstack.cfn import ResolvedStack, load_template  # noqa: E402
from devstack.engine import docker_client, docker_environment  # noqa: E402
from devstack.provision import provision  # noqa: E402
from devstack.stack import free_port  # noqa: E402
from fraudlib import aws  # noqa: E402
from fraudlib.synthetic import generate_transactions, to_csv_bytes  # noqa: E402

SAM = REPO_ROOT / ".tools" / "sam" / "bin" / "sam"
SAM_LOCAL = REPO_ROOT / "scripts" / "sam-local.sh"
STACK_NAME = "fraud-detection"  # the names events/env.local.json uses
SCORING_TAG = "fraud-scoring:bench"
TRAINING_TAG = "fraud-training:local"


def _run(command: list[str], env: dict[str, str], timeout_s: float = 1800) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return elapsed, done.stdout + done.stderr


def _size_mb(client, tag: str) -> float:
    return round(client.images.get(tag).attrs["Size"] / 1e6, 1)


def _report_ms(output: str) -> float | None:
    match = re.search(r"REPORT RequestId: \S+\s+Init Duration: [\d.]+ ms\s+Duration: ([\d.]+) ms", output)
    return float(match.group(1)) if match else None


def _drift_event(bucket: str, key: str, etag: str) -> dict:
    sample = json.loads((REPO_ROOT / "events" / "sqs-s3-put-incoming.json").read_text())
    notification = json.loads(sample["Records"][0]["body"])
    s3_part = notification["Records"][0]["s3"]
    s3_part["bucket"]["name"] = bucket
    s3_part["object"].update(key=urllib.parse.quote_plus(key), eTag=etag)
    sample["Records"][0]["body"] = json.dumps(notification)
    return sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-builds", action="store_true", help="measure only sizes and invocations")
    parser.add_argument("--warm-calls", type=int, default=5)
    args = parser.parse_args(argv)
    client = docker_client()
    if client is None:
        print("no Docker API answers: scripts/container-engine.sh up", file=sys.stderr)
        return 1
    env = {**os.environ, **docker_environment(), "SAM_CLI_TELEMETRY": "0"}
    results: dict[str, float | None] = {}

    if not args.skip_builds:
        results.update(_builds(env))
    elapsed, _ = _run([str(SAM), "build"], env)
    results["sam_build_s"] = round(elapsed, 1)
    print(f"sam build (its cache as left): {elapsed:.1f} s", flush=True)
    results.update(_image_sizes(client))

    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    local_env = {**env, "ENDPOINT_PORT": str(port)}
    try:
        outputs = provision(ResolvedStack(load_template(), stack_name=STACK_NAME))
        with tempfile.TemporaryDirectory() as scratch:
            import entrypoint

            data = Path(scratch) / "first.csv"
            data.write_bytes(to_csv_bytes(generate_transactions(8_000, seed=5, fraud_rate=0.03)))
            os.environ.update(
                ARTIFACTS_BUCKET=outputs["ArtifactsBucketName"],
                LOCK_TABLE=outputs["TrainingLockTableName"],
                FRAUD_STATE_DIR=scratch,
            )
            if entrypoint.main(["--data", str(data), "--job-id", "bench", "--preset", "smoke"]) != 0:
                raise SystemExit("training the bench model failed")

            s3 = aws.client("s3")
            incoming = outputs["IncomingBucketName"]

            def drift_event_file(index: int) -> Path:
                key = f"incoming/bench-{index}.csv"
                body = to_csv_bytes(generate_transactions(2_000, seed=100 + index, fraud_rate=0.03))
                etag = s3.put_object(Bucket=incoming, Key=key, Body=body)["ETag"].strip('"')
                path = Path(scratch) / f"drift-{index}.json"
                path.write_text(json.dumps(_drift_event(incoming, key, etag)))
                return path

            cold_events = {
                "ScoringFunction": REPO_ROOT / "events" / "api-predict.json",
                "DriftFunction": drift_event_file(0),
            }
            for function, event in cold_events.items():
                elapsed, output = _run([str(SAM_LOCAL), "invoke", function, "-e", str(event)], local_env, 600)
                short = "scoring" if function == "ScoringFunction" else "drift"
                results[f"{short}_invoke_cold_wall_s"] = round(elapsed, 2)
                results[f"{short}_invoke_cold_duration_ms"] = _report_ms(output)
                print(f"sam local invoke {function}: {elapsed:.2f} s wall, {_report_ms(output)} ms in the function")

            results.update(_warm_invocations(local_env, args.warm_calls, drift_event_file))
    finally:
        server.stop()
    print(json.dumps(results))
    return 0


def _builds(env: dict[str, str]) -> dict[str, float]:
    """Both images from their Dockerfiles with every layer built again."""
    subprocess.run(["make", "--no-print-directory", "training-image"], cwd=REPO_ROOT, env=env, check=True)
    figures = {}
    for name, dockerfile, tag in (
        ("scoring", "functions/scoring/Dockerfile", SCORING_TAG),
        ("training", "training_job/Dockerfile", TRAINING_TAG),
    ):
        elapsed, _ = _run(["docker", "build", "--no-cache", "-f", dockerfile, "-t", tag, "."], env)
        figures[f"{name}_image_build_s"] = round(elapsed, 1)
        print(f"docker build --no-cache {dockerfile}: {elapsed:.1f} s", flush=True)
    return figures


def _image_sizes(client) -> dict[str, float]:
    figures = {
        f"{label}_image_mb": _size_mb(client, tag)
        for label, tag in (
            ("lambda_base", "public.ecr.aws/lambda/python:3.11"),
            ("scoring", "scoringfunction:python3.11-v1"),
            ("training", TRAINING_TAG),
        )
    }
    print(
        f"image sizes: Lambda base {figures['lambda_base_image_mb']} MB, scoring "
        f"{figures['scoring_image_mb']} MB, training {figures['training_image_mb']} MB",
        flush=True,
    )
    return figures


def _warm_invocations(local_env: dict[str, str], calls: int, drift_event_file) -> dict[str, float]:
    """Median of ``calls`` invocations per function through `sam local start-lambda`."""
    import botocore.session
    from botocore.config import Config

    lambda_port = free_port()
    with tempfile.TemporaryFile() as server_log:
        server = subprocess.Popen(
            [str(SAM_LOCAL), "start-lambda", "-p", str(lambda_port), "--warm-containers", "EAGER"],
            cwd=REPO_ROOT,
            env=local_env,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        figures: dict[str, float] = {}
        try:
            client = botocore.session.get_session().create_client(
                "lambda",
                region_name="us-east-1",
                endpoint_url=f"http://127.0.0.1:{lambda_port}",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(read_timeout=300, retries={"max_attempts": 0}),
            )
            predict = (REPO_ROOT / "events" / "api-predict.json").read_bytes()
            deadline = time.monotonic() + 180
            while True:
                try:
                    client.invoke(FunctionName="ScoringFunction", Payload=predict)
                    break
                except Exception:
                    if time.monotonic() > deadline or server.poll() is not None:
                        server_log.seek(0)
                        print(server_log.read().decode("utf-8", "replace")[-3000:], file=sys.stderr)
                        raise
                    time.sleep(1)
            for function, short in (("ScoringFunction", "scoring"), ("DriftFunction", "drift")):
                timings = []
                for index in range(calls):
                    payload = predict if function == "ScoringFunction" else drift_event_file(10 + index).read_bytes()
                    started = time.monotonic()
                    response = client.invoke(FunctionName=function, Payload=payload)
                    response["Payload"].read()
                    timings.append(time.monotonic() - started)
                figures[f"{short}_invoke_warm_p50_ms"] = round(statistics.median(timings) * 1000, 1)
                print(f"warm {function} through start-lambda: p50 {figures[f'{short}_invoke_warm_p50_ms']} ms")
        finally:
            server.terminate()
            server.wait(timeout=60)
    return figures


if __name__ == "__main__":
    sys.exit(main())
