"""Benchmark of the scoring function: handler latency, cold start, HTTP throughput, image.

    python bench/scoring_bench.py                       # trains a small bundle first (synthetic)
    python bench/scoring_bench.py --bundle-dir DIR      # a bundle written by `make train ARGS=--output-dir DIR`

Everything runs against an embedded moto S3 holding the bundle and the champion pointer:

* handler latency: ``lambda_handler(event)`` for the seed's one-transaction body and for a
  1,000-transaction batch, API Gateway REST events in, proxy responses out (validation,
  scoring, JSON included); p50/p99 over ``--calls`` calls each, after a warm-up;
* cold start: a fresh Python process imports the handler module (settings, S3 client,
  pointer, bundle, ONNX sessions) and answers its first request; the time from before the
  import to the first answer, median of ``--cold-starts`` processes (interpreter start
  excluded, as Lambda's Init duration excludes its own runtime start), with the variables
  Lambda's runtime sets (``LAMBDA_TASK_ROOT`` among them: outside Lambda the X-Ray SDK
  builds a centralised-sampling client at import, 0.2 s that Lambda never spends);
* HTTP: requests/s through the local API adapter (``devstack.api``, two execution
  environments) from a separate load process with keep-alive connections, for
  ``--http-seconds``;
* image: whether the scoring image's requirements resolve to anything with torch (pip's
  resolver, ``--dry-run``; needs the package index).

The last line is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "training_job")]

from devstack.api import EnvironmentPool, LocalApi  # noqa: E402
from devstack.cfn import ResolvedStack, load_template  # noqa: E402
from devstack.poller import LambdaContext  # noqa: E402
from devstack.provision import provision  # noqa: E402
from devstack.stack import emulator_environment, free_port, function_module_loader  # noqa: E402
from fraud_training.config import TrainingConfig  # noqa: E402
from fraudlib import aws  # noqa: E402
from fraudlib.schema import FEATURE_COLUMNS  # noqa: E402
from fraudlib.synthetic import generate_transactions, to_csv_bytes  # noqa: E402

STACK_NAME = "scoringbench"
EVENT_PATH = REPO_ROOT / "events" / "api-predict.json"

_COLD_START_PROBE = """
import json, sys, time
started = time.perf_counter()
sys.path.insert(0, {code_dir!r})
import app
event = json.loads(open({event_path!r}).read())
response = app.lambda_handler(event, __import__("devstack.poller", fromlist=["x"]).LambdaContext(function_name="bench"))
elapsed = time.perf_counter() - started
assert response["statusCode"] == 200, response
print(json.dumps({{"cold_start_s": elapsed, "imported_torch": "torch" in sys.modules,
                  "imported_openapi_models": "aws_lambda_powertools.event_handler.openapi.models" in sys.modules}}))
"""

_LOAD_CLIENT = """
import http.client, json, sys, threading, time
host, port, seconds, threads, body = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
counts, errors = [0] * threads, [0] * threads
deadline = time.monotonic() + seconds
def run(i):
    connection = http.client.HTTPConnection(host, port, timeout=30)
    while time.monotonic() < deadline:
        connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            counts[i] += 1
        else:
            errors[i] += 1
started = time.monotonic()
workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
[w.start() for w in workers]
[w.join() for w in workers]
elapsed = time.monotonic() - started
print(json.dumps({"requests": sum(counts), "errors": sum(errors), "seconds": elapsed}))
"""


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def train_small_bundle(outputs: dict[str, str], workdir: Path, ensemble_size: int, distill: bool) -> None:
    """A bundle from the training job itself (project default architecture and, unless told
    otherwise, its ensemble size and distillation; a few epochs on synthetic data): what is
    benchmarked is the served graph's size, not its quality.

    The job runs in a process of its own: trained in this one, it left this process (which
    also serves the S3 the cold starts read from) slowing every cold start measured after it,
    0.6 s against 0.43 s (measured here)."""
    data = workdir / "train.csv"
    data.write_bytes(to_csv_bytes(generate_transactions(20_000, seed=1, fraud_rate=0.02)))
    env = {
        **os.environ,
        "ARTIFACTS_BUCKET": outputs["ArtifactsBucketName"],
        "LOCK_TABLE": outputs["TrainingLockTableName"],
        "FRAUD_STATE_DIR": str(workdir),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "training_job")]),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    args = ["--data", str(data), "--job-id", "bench", "--preset", "smoke", "--max-epochs", "5", "--baseline", "false"]
    args += ["--ensemble-size", str(ensemble_size), "--distill", str(distill).lower(), "--distill-max-epochs", "5"]
    entrypoint = str(REPO_ROOT / "training_job" / "entrypoint.py")
    done = subprocess.run([sys.executable, entrypoint, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"training the benchmark bundle failed:\n{done.stderr[-3000:]}")


def publish_bundle_dir(outputs: dict[str, str], bundle_dir: Path) -> str:
    from fraudlib.pointer import ChampionPointer

    s3 = aws.client("s3")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    version = manifest["model_version"]
    for path in sorted(bundle_dir.iterdir()):
        s3.put_object(
            Bucket=outputs["ArtifactsBucketName"], Key=f"models/{version}/{path.name}", Body=path.read_bytes()
        )
    pointer = ChampionPointer.for_version(version, "2026-12-03T00:00:00+00:00")
    s3.put_object(Bucket=outputs["ArtifactsBucketName"], Key="models/champion.json", Body=pointer.to_json())
    return version


def events() -> tuple[dict, dict]:
    single = json.loads(EVENT_PATH.read_text())
    columns = generate_transactions(1000, seed=7, fraud_rate=0.01)
    rows = np.column_stack([columns[name] for name in FEATURE_COLUMNS])
    batch = copy.deepcopy(single)
    batch["body"] = json.dumps({"transactions": [dict(zip(FEATURE_COLUMNS, r.tolist(), strict=True)) for r in rows]})
    return single, batch


def time_handler(handler, event: dict, calls: int) -> list[float]:
    """Handler latencies in ms. The EMF metrics are written, as in Lambda, to a sink (Lambda
    drains stdout through a pipe)."""
    context = LambdaContext(function_name="bench")
    timings = []
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        for _ in range(min(50, calls)):
            handler(event, context)
        for _ in range(calls):
            started = time.perf_counter()
            response = handler(event, context)
            timings.append((time.perf_counter() - started) * 1e3)
            if response["statusCode"] != 200:
                raise SystemExit(f"handler answered {response['statusCode']}: {response['body'][:300]}")
    return timings


def cold_starts(env: dict[str, str], repeats: int) -> list[dict]:
    code_dir = str(REPO_ROOT / "functions" / "scoring")
    probe = _COLD_START_PROBE.format(code_dir=code_dir, event_path=str(EVENT_PATH))
    lambda_runtime_env = {
        "LAMBDA_TASK_ROOT": code_dir,
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
        "_HANDLER": "app.lambda_handler",
    }
    results = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env={**os.environ, **env, **lambda_runtime_env, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"cold-start probe failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def image_has_torch() -> bool | None:
    """Resolve the image's requirements as pip would in the image; None if the index is not
    reachable."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
             str(report), "-r", str(REPO_ROOT / "functions" / "scoring" / "requirements.txt")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not report.exists():
            print(f"  (pip could not resolve the image requirements: {done.stderr.strip()[-200:]})")
            return None
        names = [item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]]
    return any(name == "torch" or name.startswith("torch") or "tabnet" in name for name in names)


def http_rps(env: dict[str, str], resolved: ResolvedStack, seconds: float, clients: int) -> dict:
    load, handler_name = function_module_loader(resolved, "ScoringFunction", env)
    pool = EnvironmentPool(load, handler_name, max_environments=2)
    pool.warm_up()
    api = LocalApi(pool, "bench", port=0).start()
    host, port = api.url.split("//")[1].rstrip("/").split(":")
    body = json.loads(EVENT_PATH.read_text())["body"]
    try:
        done = subprocess.run(
            [sys.executable, "-c", _LOAD_CLIENT, host, port, str(seconds), str(clients), body],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        api.stop()
    result = json.loads(done.stdout)
    result["rps"] = result["requests"] / result["seconds"]
    return result


def print_table(figures: dict, cold: list[float], colds: list[dict], http: dict, clients: int) -> None:
    rows = [
        ("handler, 1 transaction (seed body), p50 / p99", f"{figures['single_p50_ms']} / {figures['single_p99_ms']} ms",
         "p50 ≤ 1 ms"),
        ("handler, 1,000 transactions, p50 / p99", f"{figures['batch1000_p50_ms']} / {figures['batch1000_p99_ms']} ms",
         "p50 ≤ 15 ms"),
        (f"cold start (import + load bundle + first answer), median of {len(cold)}",
         f"{figures['cold_start_s']} s (min {min(cold):.3f}, max {max(cold):.3f})", "≤ 0.5 s"),
        (f"HTTP through the local adapter, {clients} clients, 1 transaction",
         f"{figures['http_rps']} req/s ({http['requests']} requests, {http['errors']} errors)", ""),
        ("scoring image requirements include torch", str(figures["image_has_torch"]), "false"),
        ("torch imported by the cold start", str(any(c["imported_torch"] for c in colds)), "false"),
        ("OpenAPI model classes imported by the cold start (only /swagger, /openapi.json need them)",
         str(any(c["imported_openapi_models"] for c in colds)), "false"),
    ]  # fmt: skip
    print()
    print("| measure | figure | target |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle-dir", type=Path, help="a bundle's files (default: train a small one)")
    parser.add_argument("--calls", type=int, default=1000, help="handler calls per body (default 1000)")
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--http-seconds", type=float, default=10.0)
    parser.add_argument("--http-clients", type=int, default=4)
    parser.add_argument(
        "--ensemble-size",
        type=int,
        default=TrainingConfig().ensemble_size,
        help="members of the trained bundle (default: the training job's default)",
    )
    parser.add_argument(
        "--distill",
        choices=("true", "false"),
        default=str(TrainingConfig().distill).lower(),
        help="serve one network distilled from the members (true, the job's default) or the members' mean",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    distill = args.distill == "true" and args.ensemble_size > 1

    from moto.server import ThreadedMotoServer

    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        resolved = ResolvedStack(load_template(), stack_name=STACK_NAME)
        outputs = provision(resolved)
        with tempfile.TemporaryDirectory() as tmp:
            if args.bundle_dir:
                version = publish_bundle_dir(outputs, args.bundle_dir)
            else:
                served = "one network distilled from them" if distill else "served as their mean"
                print(
                    f"training a small bundle ({args.ensemble_size} members, {served}; 5 epochs, synthetic data) ...",
                    flush=True,
                )
                train_small_bundle(outputs, Path(tmp), args.ensemble_size, distill)
                version = None
        env = {
            **resolved.function_environment("ScoringFunction"),
            **emulator_environment(endpoint),
            "POWERTOOLS_METRICS_NAMESPACE": "Bench",
            "LOG_LEVEL": "WARNING",
        }
        load, handler_name = function_module_loader(resolved, "ScoringFunction", env)
        module = load()
        handler = getattr(module, handler_name)
        version = version or module.holder.status().model_version
        print(f"model {version}; handler latency over {args.calls} calls each ...", flush=True)
        single, batch = events()
        single_ms = time_handler(handler, single, args.calls)
        batch_ms = time_handler(handler, batch, args.calls)
        print(f"cold start: {args.cold_starts} fresh processes ...", flush=True)
        colds = cold_starts(env, args.cold_starts)
        print(f"HTTP: {args.http_clients} keep-alive clients for {args.http_seconds:g} s ...", flush=True)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # the functions' EMF lines
            http = http_rps(env, resolved, args.http_seconds, args.http_clients)
        has_torch = image_has_torch()
    finally:
        server.stop()

    cold = [c["cold_start_s"] for c in colds]
    figures = {
        "single_p50_ms": round(_percentile(single_ms, 50), 3),
        "single_p99_ms": round(_percentile(single_ms, 99), 3),
        "batch1000_p50_ms": round(_percentile(batch_ms, 50), 2),
        "batch1000_p99_ms": round(_percentile(batch_ms, 99), 2),
        "cold_start_s": round(statistics.median(cold), 3),
        "http_rps": round(http["rps"], 1),
        "image_has_torch": has_torch,
    }
    print_table(figures, cold, colds, http, args.http_clients)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
