"""Benchmark of the drift path: parse + validate, the 30 KS tests, the whole handler, RSS.

    python bench/drift_bench.py                      # synthetic data, 284,807 rows
    python bench/drift_bench.py --data creditcard.csv  # the real data set

The reference profile is built from the first 170,000 rows (uncapped); the batches are the
next 50,000 rows and the whole file (284,807 rows). "Handler" time runs from the CSV bytes
in memory to the finished report JSON (parse, validate, KS, report), network excluded; it
is measured in a fresh process per batch size, whose peak RSS is reported. The KS tests are
timed against a loop of ``scipy.stats.ks_2samp`` in the same run.

The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

from fraudlib.batch import Batch, read_batch
from fraudlib.drift import DriftConfig, KSDriftDetector, PValueMethod, ks_statistic
from fraudlib.features import TIME_OF_DAY_FEATURE, time_of_day_s
from fraudlib.profile import ReferenceProfile, build_reference_profile
from fraudlib.report import drift_report
from fraudlib.schema import FEATURE_COLUMNS, TIME_COLUMN
from fraudlib.synthetic import generate_transactions, to_csv_bytes

REFERENCE_ROWS = 170_000
SMALL_BATCH_ROWS = 50_000
FULL_ROWS = 284_807


def peak_rss_mb() -> float:
    """This process's peak resident set, from /proc (VmHWM).

    Not ``getrusage``: its ru_maxrss survives fork + exec, so a child would report the
    parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def measure_handler(csv_path: Path, profile_path: Path, repeats: int) -> dict[str, float]:
    """Run in a fresh process: time bytes-in-memory -> report, and read the peak RSS."""
    from fraudlib.coordination import BatchRef

    data = csv_path.read_bytes()
    profile = ReferenceProfile.from_bytes(profile_path.read_bytes())
    detector = KSDriftDetector(profile, DriftConfig())
    parse_s, ks_s, total_s = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        batch = read_batch(io.BytesIO(data), source=csv_path.name)
        parsed = time.perf_counter()
        result = detector.detect(batch)
        tested = time.perf_counter()
        report = drift_report(
            batch_ref=BatchRef("bench", f"incoming/{csv_path.name}", "etag"),
            batch=batch,
            result=result,
            profile=profile,
            profile_key="models/bench/reference_profile.npz",
            timings_s={"read_validate": parsed - started, "ks": tested - parsed},
        )
        json.dumps(report)
        finished = time.perf_counter()
        parse_s.append(parsed - started)
        ks_s.append(tested - parsed)
        total_s.append(finished - started)
    return {
        "rows": batch.n_rows,
        "parse_s": _median(parse_s),
        "ks_s": _median(ks_s),
        "handler_s": _median(total_s),
        "handler_min_s": min(total_s),
        "peak_rss_mb": peak_rss_mb(),
        "drifted_features": len(result.drifted_features),
    }


def _tested_values(batch: Batch, name: str) -> np.ndarray:
    values = batch.column(name)
    return time_of_day_s(values) if name == TIME_COLUMN else values


def _reference_for(profile: ReferenceProfile, name: str) -> np.ndarray:
    return profile.sorted_values[TIME_OF_DAY_FEATURE if name == TIME_COLUMN else name]


def compare_ks(profile: ReferenceProfile, batch: Batch, repeats: int) -> dict[str, float]:
    """Our 30 KS tests (default and exact p-values) against a scipy.stats.ks_2samp loop."""

    def ours(method: PValueMethod) -> float:
        detector = KSDriftDetector(profile, DriftConfig(p_value_method=method))
        detector.detect(batch)  # warm-up: first-touch page faults, thread start
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            detector.detect(batch)
            times.append(time.perf_counter() - started)
        return _median(times)

    def scipy_loop() -> tuple[float, list[float]]:
        times: list[float] = []
        values: list[float] = []
        for _ in range(repeats):
            started = time.perf_counter()
            values = [
                float(
                    stats.ks_2samp(
                        _reference_for(profile, name), _tested_values(batch, name), method="asymp"
                    ).statistic
                )
                for name in FEATURE_COLUMNS
            ]
            times.append(time.perf_counter() - started)
        return _median(times), values

    ours_default_s = ours(DriftConfig().p_value_method)
    ours_exact_s = ours(PValueMethod.EXACT)
    scipy_s, scipy_statistics = scipy_loop()
    ours_statistics = [
        ks_statistic(_reference_for(profile, n), _tested_values(batch, n)) for n in FEATURE_COLUMNS
    ]
    return {
        "ks_ours_s": ours_default_s,
        "ks_ours_exact_s": ours_exact_s,
        "ks_scipy_loop_s": scipy_s,
        "speedup": scipy_s / ours_default_s,
        "speedup_exact_vs_exact": scipy_s / ours_exact_s,
        "max_abs_stat_diff": float(np.max(np.abs(np.array(ours_statistics) - np.array(scipy_statistics)))),
    }


def _csv_lines(data: bytes) -> tuple[bytes, list[bytes]]:
    header, body = data.split(b"\n", 1)
    return header + b"\n", body.splitlines(keepends=True)


def prepare(data_path: Path | None, workdir: Path) -> tuple[str, dict[str, Path], Path, dict[str, Batch]]:
    """Write the batches and the reference profile; return what the runs need."""
    if data_path is None:
        source = f"synthetic ({FULL_ROWS:,} rows, seed 0)"
        full_bytes = to_csv_bytes(generate_transactions(FULL_ROWS, seed=0))
    else:
        source = str(data_path)
        full_bytes = data_path.read_bytes()
    full = read_batch(io.BytesIO(full_bytes), source="full.csv")
    header, lines = _csv_lines(full_bytes)
    small_bytes = header + b"".join(lines[REFERENCE_ROWS : REFERENCE_ROWS + SMALL_BATCH_ROWS])
    paths = {"50k": workdir / "batch-50k.csv", "full": workdir / "batch-full.csv"}
    paths["50k"].write_bytes(small_bytes)
    paths["full"].write_bytes(full_bytes)
    reference = {name: full.column(name)[:REFERENCE_ROWS] for name in FEATURE_COLUMNS}
    profile = build_reference_profile(reference, model_version="bench", data_hash="bench", max_rows=None)
    profile_path = workdir / "reference_profile.npz"
    profile_path.write_bytes(profile.to_bytes())
    small = Batch(features=full.features[REFERENCE_ROWS : REFERENCE_ROWS + SMALL_BATCH_ROWS], labels=None)
    return source, paths, profile_path, {"50k": small, "full": full}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="the real creditcard.csv (default: synthetic data)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--measure-handler", nargs=2, type=Path, metavar=("CSV", "PROFILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.measure_handler:
        print(json.dumps(measure_handler(*args.measure_handler, args.repeats)))
        return 0

    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        source, paths, profile_path, batches = prepare(args.data, Path(tmp))
        profile = ReferenceProfile.from_bytes(profile_path.read_bytes())
        print(f"data: {source}; reference: first {REFERENCE_ROWS:,} rows (uncapped profile)")
        print(f"drift rule: {DriftConfig().describe(30)}; p-values: {DriftConfig().p_value_method.value}")
        rows = {}
        for size, path in paths.items():
            run = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure-handler",
                    str(path),
                    str(profile_path),
                    "--repeats",
                    str(args.repeats),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            rows[size] = {
                **json.loads(run.stdout.strip().splitlines()[-1]),
                **compare_ks(profile, batches[size], args.repeats),
            }

    header = (
        f"{'batch':>6} {'rows':>8} {'parse+validate s':>17} {'KS s':>6} {'handler s':>10} {'peak RSS MB':>12}"
        f" {'KS scipy loop s':>16} {'speed-up':>9} {'ours exact s':>13} {'exact speed-up':>15} {'max |dD|':>9}"
    )
    print(header)
    for size, row in rows.items():
        print(
            f"{size:>6} {row['rows']:>8,} {row['parse_s']:>17.3f} {row['ks_s']:>6.3f} {row['handler_s']:>10.3f}"
            f" {row['peak_rss_mb']:>12.0f} {row['ks_scipy_loop_s']:>16.3f} {row['speedup']:>8.1f}x"
            f" {row['ks_ours_exact_s']:>13.3f} {row['speedup_exact_vs_exact']:>14.1f}x {row['max_abs_stat_diff']:>9.1e}"
        )
    summary = {
        "handler_s_50k": round(rows["50k"]["handler_s"], 3),
        "handler_s_full": round(rows["full"]["handler_s"], 3),
        "ks_speedup_vs_scipy": round(min(row["speedup"] for row in rows.values()), 2),
        "peak_rss_mb": round(max(row["peak_rss_mb"] for row in rows.values()), 1),
        "max_abs_stat_diff_vs_scipy": max(row["max_abs_stat_diff"] for row in rows.values()),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
