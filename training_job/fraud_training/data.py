"""Training data: the base dataset plus every labelled batch, validated like the drift path.

Rows are schema-checked by ``fraudlib.batch.read_batch`` (the drift Lambda's own reader),
exact duplicate rows are dropped before any split (the real data has 1,081, and a random
split would put copies on both sides), and the result is fingerprinted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fraudlib.batch import Batch, BatchLimits, read_batch
from fraudlib.layout import BASE_DATASET_KEY, BATCH_RECORD_PREFIX
from fraudlib.schema import FEATURE_COLUMNS, LABEL_COLUMN
from fraudlib.synthetic import to_csv_bytes

log = logging.getLogger(__name__)
TRAINING_LIMITS = BatchLimits(max_bytes=4 * 1024**3, max_rows=50_000_000)


class DataError(ValueError):
    """Training data that cannot be used (unlabelled, no frauds, unreadable)."""


@dataclass(frozen=True)
class Dataset:
    """Labelled rows with where they came from.

    Attributes
    ----------
    features : ndarray (n, 30), canonical column order
    labels : ndarray (n,) of 0/1
    sources : list of (name, rows) in the order the rows are stacked
    duplicates_dropped : int
    origin : ndarray (n,) of int, the index in ``sources`` each row came from
    """

    features: np.ndarray
    labels: np.ndarray
    sources: tuple[tuple[str, int], ...]
    duplicates_dropped: int
    origin: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_frauds(self) -> int:
        return int(self.labels.sum())

    def content_hash(self) -> str:
        """SHA-256 of the rows trained on (features and labels, float64, row order kept)."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.features, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(self.labels, dtype=np.int8).tobytes())
        return digest.hexdigest()


def _labelled(batch: Batch, name: str) -> Batch:
    if batch.labels is None:
        raise DataError(f"{name} has no {LABEL_COLUMN} column: training needs labelled rows")
    return batch


def read_local_or_s3(uri: str, s3: Any) -> Batch:
    """Read and validate one CSV (plain or gzip) from a path or an s3:// URI."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with body:
            return _labelled(read_batch(body, source=uri, limits=TRAINING_LIMITS), uri)
    with Path(uri).open("rb") as handle:
        return _labelled(read_batch(handle, source=uri, limits=TRAINING_LIMITS), uri)


def unique_rows(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row (features and label), in order."""
    rows = np.ascontiguousarray(np.column_stack([features, labels.astype(np.float64)]))
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    return np.sort(first)


def drop_duplicates(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop exact duplicate rows (features and label), keeping the first of each, in order."""
    keep = unique_rows(features, labels)
    return features[keep], labels[keep], int(labels.shape[0] - keep.shape[0])


def stack(batches: list[tuple[str, Batch]]) -> Dataset:
    if not batches:
        raise DataError("no training data: give --data for the first training")
    features = np.concatenate([batch.features for _, batch in batches])
    labels = np.concatenate([batch.labels for _, batch in batches if batch.labels is not None])
    origin = np.repeat(np.arange(len(batches)), [batch.n_rows for _, batch in batches])
    keep = unique_rows(features, labels)
    dataset = Dataset(
        features=features[keep],
        labels=labels[keep].astype(np.int8),
        sources=tuple((name, batch.n_rows) for name, batch in batches),
        duplicates_dropped=int(labels.shape[0] - keep.shape[0]),
        origin=origin[keep],
    )
    if dataset.n_frauds < 2 or dataset.n_frauds == dataset.n_rows:
        raise DataError(f"training data has {dataset.n_frauds} frauds in {dataset.n_rows} rows: need both classes")
    return dataset


def base_dataset_bytes(batch: Batch) -> bytes:
    """The first training's data as the gzip CSV stored at ``datasets/base/base.csv.gz``."""
    columns = {name: batch.column(name) for name in FEATURE_COLUMNS}
    assert batch.labels is not None
    columns[LABEL_COLUMN] = batch.labels
    return gzip.compress(to_csv_bytes(columns), compresslevel=5, mtime=0)


def labelled_batch_uris(s3: Any, artifacts_bucket: str) -> list[str]:
    """Every accepted labelled batch, from the drift path's batch records, oldest first."""
    paginator = s3.get_paginator("list_objects_v2")
    records = []
    for page in paginator.paginate(Bucket=artifacts_bucket, Prefix=BATCH_RECORD_PREFIX):
        for item in page.get("Contents", []):
            record = json.loads(s3.get_object(Bucket=artifacts_bucket, Key=item["Key"])["Body"].read())
            if record.get("labelled"):
                records.append((record["recorded_at"], record["batch"]["uri"]))
    uris = []
    for _, uri in sorted(records):
        if uri not in uris:  # a re-uploaded object has one record per version; read it once
            uris.append(uri)
    return uris


def _channel_copy(uri: str, channels: Path | None, channel: str, prefix: str) -> str:
    """Under SageMaker, the local copy of ``uri`` in an input channel, when there is one.

    The ``base`` channel holds ``datasets/base/``, the ``incoming`` channel ``incoming/``
    (see ``fraudlib.launcher``); reading them saves a second download.
    """
    if channels is None:
        return uri
    key = uri[len("s3://") :].partition("/")[2]
    if not key.startswith(prefix):
        return uri
    local = channels / channel / key[len(prefix) :]
    return str(local) if local.is_file() else uri


def load_training_data(
    s3: Any, artifacts_bucket: str, first_data: str, channels: Path | None = None
) -> tuple[Dataset, Batch | None]:
    """The base dataset (or ``first_data``, which becomes it) plus every labelled batch.

    Returns
    -------
    (dataset, new_base)
        ``new_base`` is the first training's data, to be stored as the base dataset; None on
        a retrain.
    """
    batches: list[tuple[str, Batch]] = []
    new_base = None
    if first_data:
        new_base = read_local_or_s3(first_data, s3)
        batches.append((first_data, new_base))
    else:
        base_uri = f"s3://{artifacts_bucket}/{BASE_DATASET_KEY}"
        try:
            source = _channel_copy(base_uri, channels, "base", "datasets/base/")
            batches.append((base_uri, read_local_or_s3(source, s3)))
        except (s3.exceptions.NoSuchKey, FileNotFoundError) as exc:
            raise DataError(f"no base dataset at {base_uri}: train the first model with --data") from exc
    for uri in labelled_batch_uris(s3, artifacts_bucket):
        try:
            batches.append((uri, read_local_or_s3(_channel_copy(uri, channels, "incoming", "incoming/"), s3)))
        except s3.exceptions.NoSuchKey:
            log.warning("labelled batch %s is gone; training without it", uri)
    return stack(batches), new_base
