"""The model's input transform: fitted on training data only, saved in the bundle.

TabNet's own zip stores no preprocessing, so the fitted transform travels beside it as JSON
and scoring applies exactly the same arithmetic (NumPy only, no torch, no scikit-learn).

Steps, in order: ``Amount`` -> ``log1p(Amount)``; ``Time`` dropped, kept raw, or encoded as
the hour of day on the unit circle (``sin``, ``cos``); then every column standardised with
the training mean and standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from fraudlib.features import SECONDS_PER_DAY
from fraudlib.schema import AMOUNT_COLUMN, FEATURE_COLUMNS, PCA_COLUMNS, TIME_COLUMN

PREPROCESSING_FORMAT_VERSION = 1
_MIN_SCALE = 1e-12


class TimeEncoding(StrEnum):
    DROP = "drop"
    RAW = "raw"
    HOUR_OF_DAY = "hour_of_day"


def _engineered(features: np.ndarray, time_encoding: TimeEncoding) -> tuple[np.ndarray, list[str]]:
    """Raw (n, 30) features in canonical order -> engineered columns, before scaling."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != len(FEATURE_COLUMNS):
        raise ValueError(f"expected an array of shape (n, {len(FEATURE_COLUMNS)}), got {features.shape}")
    time_s = features[:, FEATURE_COLUMNS.index(TIME_COLUMN)]
    amount = features[:, FEATURE_COLUMNS.index(AMOUNT_COLUMN)]
    pca = features[:, 1 : 1 + len(PCA_COLUMNS)]
    columns: list[np.ndarray] = []
    names: list[str] = []
    if time_encoding is TimeEncoding.RAW:
        columns.append(time_s[:, None])
        names.append(TIME_COLUMN)
    elif time_encoding is TimeEncoding.HOUR_OF_DAY:
        angle = 2.0 * np.pi * np.mod(time_s, SECONDS_PER_DAY) / SECONDS_PER_DAY
        columns.extend([np.sin(angle)[:, None], np.cos(angle)[:, None]])
        names.extend(["hour_sin", "hour_cos"])
    columns.append(pca)
    names.extend(PCA_COLUMNS)
    # Amounts are never negative in the data; clip so that a bad value cannot make a NaN.
    columns.append(np.log1p(np.maximum(amount, 0.0))[:, None])
    names.append("log1p_Amount")
    return np.hstack(columns), names


@dataclass(frozen=True)
class Preprocessor:
    """A fitted transform. Build one with :meth:`fit`; store it with :meth:`to_dict`."""

    time_encoding: TimeEncoding
    output_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, time_encoding: TimeEncoding = TimeEncoding.DROP) -> Preprocessor:
        """Fit on training rows only.

        Parameters
        ----------
        features : ndarray, shape (n, 30)
            Raw features in canonical order (``schema.FEATURE_COLUMNS``).
        time_encoding : TimeEncoding
        """
        engineered, names = _engineered(features, time_encoding)
        scale = engineered.std(axis=0)
        return cls(
            time_encoding=time_encoding,
            output_names=tuple(names),
            mean=engineered.mean(axis=0),
            scale=np.where(scale < _MIN_SCALE, 1.0, scale),
        )

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Raw (n, 30) features -> model inputs (n, ``n_outputs``), float64 (the served
        graph's input type)."""
        engineered, _ = _engineered(features, self.time_encoding)
        return (engineered - self.mean) / self.scale

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": PREPROCESSING_FORMAT_VERSION,
            "time_encoding": self.time_encoding.value,
            "output_names": list(self.output_names),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Preprocessor:
        if document.get("format_version") != PREPROCESSING_FORMAT_VERSION:
            raise ValueError(f"preprocessing format {document.get('format_version')!r} is not supported")
        return cls(
            time_encoding=TimeEncoding(document["time_encoding"]),
            output_names=tuple(document["output_names"]),
            mean=np.asarray(document["mean"], dtype=np.float64),
            scale=np.asarray(document["scale"], dtype=np.float64),
        )
