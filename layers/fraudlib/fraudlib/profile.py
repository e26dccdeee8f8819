"""The reference profile: what "normal" data looked like when the served model was trained.

The profile is an explicit, versioned artifact stored next to the model it belongs to. It
holds, per feature, the sorted reference sample (capped at ``max_rows`` rows, drawn row-wise
with a seed), so that the drift detector can compute exact two-sample KS statistics without
ever sorting the reference again.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from fraudlib.features import TIME_OF_DAY_FEATURE, time_of_day_s
from fraudlib.schema import FEATURE_COLUMNS, TIME_COLUMN

PROFILE_FORMAT_VERSION = 1
DEFAULT_PROFILE_MAX_ROWS = 200_000
PROFILE_FEATURES: tuple[str, ...] = (*FEATURE_COLUMNS, TIME_OF_DAY_FEATURE)
_METADATA_KEY = "__metadata__"


class ColumnSource(Protocol):
    """Anything indexable by column name: a pandas DataFrame, a dict of arrays."""

    def __getitem__(self, name: str) -> Any: ...


class ProfileFormatError(ValueError):
    """A stored profile that cannot be read (wrong version, missing feature, corrupt file)."""


@dataclass(frozen=True)
class ReferenceProfile:
    """Sorted reference samples per feature, with the model version they belong to.

    Attributes
    ----------
    sorted_values : dict of str to ndarray
        Per feature of ``PROFILE_FEATURES``, the reference sample sorted ascending (float64).
    model_version : str
        Version of the model trained on the data this profile describes.
    data_hash : str
        Content hash of that training data.
    n_source_rows : int
        Rows of the data before capping.
    created_at : str
        ISO-8601 UTC time of creation.
    """

    sorted_values: dict[str, np.ndarray]
    model_version: str
    data_hash: str
    n_source_rows: int
    created_at: str

    @property
    def n_rows(self) -> int:
        """Rows in the stored (possibly capped) sample."""
        return int(next(iter(self.sorted_values.values())).shape[0])

    def metadata(self) -> dict[str, Any]:
        return {
            "format_version": PROFILE_FORMAT_VERSION,
            "model_version": self.model_version,
            "data_hash": self.data_hash,
            "n_source_rows": self.n_source_rows,
            "n_rows": self.n_rows,
            "created_at": self.created_at,
            "features": list(self.sorted_values),
        }

    def to_bytes(self) -> bytes:
        """Serialise as an ``.npz`` archive (no pickle), metadata as JSON inside it."""
        buffer = io.BytesIO()
        meta = np.frombuffer(json.dumps(self.metadata()).encode("utf-8"), dtype=np.uint8)
        np.savez(buffer, **self.sorted_values, **{_METADATA_KEY: meta})
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        """Read a profile written by :meth:`to_bytes`."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                meta = json.loads(archive[_METADATA_KEY].tobytes().decode("utf-8"))
                if meta.get("format_version") != PROFILE_FORMAT_VERSION:
                    raise ProfileFormatError(
                        f"profile format {meta.get('format_version')!r} is not supported"
                        f" (this code reads format {PROFILE_FORMAT_VERSION})"
                    )
                missing = [f for f in PROFILE_FEATURES if f not in archive.files]
                if missing:
                    raise ProfileFormatError(f"profile lacks features: {', '.join(missing)}")
                values = {f: np.asarray(archive[f], dtype=np.float64) for f in PROFILE_FEATURES}
        except (OSError, ValueError, KeyError) as exc:
            if isinstance(exc, ProfileFormatError):
                raise
            raise ProfileFormatError(f"profile is not a readable .npz archive: {exc}") from exc
        return cls(
            sorted_values=values,
            model_version=str(meta["model_version"]),
            data_hash=str(meta["data_hash"]),
            n_source_rows=int(meta["n_source_rows"]),
            created_at=str(meta["created_at"]),
        )


def build_reference_profile(
    frame: ColumnSource,
    *,
    model_version: str,
    data_hash: str,
    max_rows: int | None = DEFAULT_PROFILE_MAX_ROWS,
    seed: int = 0,
) -> ReferenceProfile:
    """Build the reference profile from training data.

    Parameters
    ----------
    frame : DataFrame or mapping of column name to array
        Must hold the 30 feature columns; other columns are ignored.
    model_version, data_hash : str
        Identify the model and the data the profile belongs to.
    max_rows : int or None
        Cap on stored rows; a seeded row-wise sample is kept when the data is larger.
        ``None`` keeps every row.
    seed : int
        Seed of that sample.

    Returns
    -------
    ReferenceProfile
    """
    columns = {name: np.asarray(frame[name], dtype=np.float64) for name in FEATURE_COLUMNS}
    n_source_rows = int(columns[TIME_COLUMN].shape[0])
    if n_source_rows == 0:
        raise ValueError("cannot build a reference profile from zero rows")
    if max_rows is not None and n_source_rows > max_rows:
        rows = np.random.default_rng(seed).choice(n_source_rows, size=max_rows, replace=False)
        columns = {name: values[rows] for name, values in columns.items()}
    columns[TIME_OF_DAY_FEATURE] = time_of_day_s(columns[TIME_COLUMN])
    return ReferenceProfile(
        sorted_values={name: np.sort(columns[name]) for name in PROFILE_FEATURES},
        model_version=model_version,
        data_hash=data_hash,
        n_source_rows=n_source_rows,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
