"""The demo's data: the real creditcard.csv when it can be had, else synthetic data.

Where the real file is looked for, in order: ``--data``, ``$CREDITCARD_CSV``, the cache path
of ``../shared/data/fetch-creditcard.sh`` (``~/.cache/creditcard/creditcard.csv``), then a
public download (checked against the file's SHA-256). Without it, the synthetic generator.

Either way the demo gets the same four parts: the first model's training data (the first
part by Time), a clean batch from the same period, a later labelled batch, and a few
labelled transactions, frauds among them, to score over HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fraudlib.schema import FEATURE_COLUMNS, LABEL_COLUMN, TIME_COLUMN
from fraudlib.synthetic import generate_transactions

log = logging.getLogger(__name__)

CREDITCARD_SHA256 = "76274b691b16a6c49d3f159c883398e03ccd6d1ee12d9d8ee38f4b4b98551a89"
CACHE_PATH = Path.home() / ".cache" / "creditcard" / "creditcard.csv"
# TensorFlow's tutorials host an unmodified copy of the ULB file.
PUBLIC_URL = "https://storage.googleapis.com/download.tensorflow.org/data/creditcard.csv"
DOWNLOAD_TIMEOUT_S = 5.0
DAY_S = 86_400.0
CLEAN_BATCH_ROWS = 20_000
SHOWCASE_FRAUDS = 3
SHOWCASE_LEGITIMATE = 3

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class DemoData:
    source: str
    """Where the data came from, in words."""
    first_training: Columns
    """Labelled: the first model trains on it."""
    clean_batch: Columns
    """Unlabelled, from the first model's period: should not drift."""
    later_batch: Columns
    """Labelled, later: drifts, and its labels feed the retraining."""
    showcase: Columns
    """Labelled transactions to score (frauds first), none of them trained on."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(destination: Path) -> Path | None:
    part = destination.with_suffix(".part")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(PUBLIC_URL, timeout=DOWNLOAD_TIMEOUT_S) as response, part.open("wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except OSError as exc:
        log.info("public download of creditcard.csv not reachable: %s", exc)
        part.unlink(missing_ok=True)
        return None
    if _sha256(part) != CREDITCARD_SHA256:
        log.warning("downloaded creditcard.csv has the wrong checksum; not used")
        part.unlink(missing_ok=True)
        return None
    part.rename(destination)
    return destination


def find_real_data(explicit: Path | None) -> tuple[Path | None, str]:
    """The real file and how it was found, or (None, why not)."""
    candidates: list[tuple[Path, str]] = []
    if explicit is not None:
        candidates.append((explicit, "--data"))
    if os.environ.get("CREDITCARD_CSV"):
        candidates.append((Path(os.environ["CREDITCARD_CSV"]), "$CREDITCARD_CSV"))
    candidates.append((CACHE_PATH, "the fetch-creditcard.sh cache"))
    for path, how in candidates:
        if path.is_file():
            return path, f"the real creditcard.csv ({path}, from {how})"
    downloaded = _download(CACHE_PATH)
    if downloaded is not None:
        return downloaded, f"the real creditcard.csv, downloaded from {PUBLIC_URL}"
    return None, "no creditcard.csv found (--data, $CREDITCARD_CSV, the cache) and no download reachable"


def _read_csv(path: Path) -> Columns:
    import pandas as pd  # development tooling; the product's reader is fraudlib.batch

    frame = pd.read_csv(path)
    columns = {name: frame[name].to_numpy(dtype=np.float64) for name in FEATURE_COLUMNS}
    columns[LABEL_COLUMN] = frame[LABEL_COLUMN].to_numpy(dtype=np.int8)
    return columns


def _rows(columns: Columns, mask: np.ndarray, *, labelled: bool = True) -> Columns:
    return {name: values[mask] for name, values in columns.items() if labelled or name != LABEL_COLUMN}


def _showcase(columns: Columns, rng: np.random.Generator) -> Columns:
    labels = columns[LABEL_COLUMN]
    frauds = rng.choice(np.flatnonzero(labels == 1), size=SHOWCASE_FRAUDS, replace=False)
    legitimate = rng.choice(np.flatnonzero(labels == 0), size=SHOWCASE_LEGITIMATE, replace=False)
    order = np.concatenate([frauds, legitimate])
    return {name: values[order] for name, values in columns.items()}


def real_data(path: Path, source: str, seed: int = 0) -> DemoData:
    """Day 1 (Time < 24 h) less a random clean batch trains the first model; day 2 is the
    later, labelled batch. The showcase comes from the clean batch, whose labels the demo
    keeps to itself."""
    columns = _read_csv(path)
    rng = np.random.default_rng(seed)
    day_one = columns[TIME_COLUMN] < DAY_S
    clean = np.zeros_like(day_one)
    clean[rng.choice(np.flatnonzero(day_one), size=CLEAN_BATCH_ROWS, replace=False)] = True
    held_out = _rows(columns, clean)
    return DemoData(
        source=source,
        first_training=_rows(columns, day_one & ~clean),
        clean_batch=_rows(columns, clean, labelled=False),
        later_batch=_rows(columns, ~day_one),
        showcase=_showcase(held_out, rng),
    )


def synthetic_data(reason: str) -> DemoData:
    """Day 1 trains the first model; a clean unlabelled day 2; a drifted labelled day 3."""
    showcase_pool = generate_transactions(2_000, seed=5, fraud_rate=0.05, duration_s=DAY_S)
    return DemoData(
        source=f"synthetic data ({reason})",
        first_training=generate_transactions(20_000, seed=1, fraud_rate=0.01, duration_s=DAY_S),
        clean_batch=generate_transactions(20_000, seed=2, start_time_s=DAY_S, duration_s=DAY_S, labelled=False),
        later_batch=generate_transactions(
            20_000,
            seed=3,
            fraud_rate=0.01,
            start_time_s=2 * DAY_S,
            duration_s=DAY_S,
            shift={"V4": 0.8, "Amount": 0.6},
        ),
        showcase=_showcase(showcase_pool, np.random.default_rng(0)),
    )


def demo_data(explicit: Path | None, *, synthetic: bool = False) -> DemoData:
    if synthetic:
        return synthetic_data("asked for with --synthetic")
    path, how = find_real_data(explicit)
    return real_data(path, how) if path is not None else synthetic_data(how)
