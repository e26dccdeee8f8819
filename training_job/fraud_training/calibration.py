"""Probability calibration of the served model (Platt scaling on the validation part).

The networks learn from undersampled data (every fraud, 50 legitimate rows per fraud where the
data has about 600), so their raw odds of fraud are about twelve times too high: the API's
``fraud_probability`` would not be a probability (on the real data the uncalibrated mean
probability was 2.2 times the fraud rate; calibrated, within 2 % of it). Platt scaling fits
``sigmoid(slope * z + intercept)`` to the validation part's labels, where ``z`` is the model's
log-odds; the validation part keeps the data's own fraud rate, so the fitted probabilities
match it. The map is monotone (slope > 0), so every ranking metric (ROC-AUC, AUPRC, precision
at a recall) and every decision at the threshold chosen on the calibrated scores stay exactly
what they were; only what the numbers mean changes. It is applied inside the served graph
(see ``tabnet_model.CalibratedNetwork``), so scoring needs nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, log_expit
from sklearn.linear_model import LogisticRegression

MIN_FRAUDS_TO_CALIBRATE = 5
"""Two parameters from fewer validation frauds than this would be a guess."""


class CalibrationError(ValueError):
    """The validation part cannot calibrate this model; the message says why."""


@dataclass(frozen=True)
class PlattScaling:
    """``probability = sigmoid(slope * log_odds + intercept)``, with what the fit saw."""

    slope: float
    intercept: float
    rows: int
    frauds: int
    log_loss_before: float
    log_loss_after: float

    def log_odds(self, raw_log_odds: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(raw_log_odds, dtype=np.float64) + self.intercept

    def probabilities(self, raw_log_odds: np.ndarray) -> np.ndarray:
        return expit(self.log_odds(raw_log_odds))

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> PlattScaling | None:
        """From a manifest's ``calibration`` (:meth:`as_dict`); None when it records none."""
        if not record or record.get("method") != "platt":
            return None
        return cls(
            float(record["slope"]),
            float(record["intercept"]),
            int(record["rows"]),
            int(record["frauds"]),
            float(record["log_loss_before"]),
            float(record["log_loss_after"]),
        )

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "method": "platt",
            "fitted_on": "validation",
            "slope": self.slope,
            "intercept": self.intercept,
            "rows": self.rows,
            "frauds": self.frauds,
            "log_loss_before": self.log_loss_before,
            "log_loss_after": self.log_loss_after,
        }


def mean_log_loss(labels: np.ndarray, log_odds: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities given as log-odds (stable at any size)."""
    labels = np.asarray(labels, dtype=np.float64)
    log_odds = np.asarray(log_odds, dtype=np.float64)
    return float(-np.mean(labels * log_expit(log_odds) + (1.0 - labels) * log_expit(-log_odds)))


def fit_platt(raw_log_odds: np.ndarray, labels: np.ndarray) -> PlattScaling:
    """Fit Platt scaling by maximum likelihood (no regularisation) on validation rows.

    Raises
    ------
    CalibrationError
        With fewer than ``MIN_FRAUDS_TO_CALIBRATE`` frauds or legitimate rows, or when the
        fitted slope is not positive (the model ranks no better than chance there).
    """
    raw = np.asarray(raw_log_odds, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int8)
    frauds = int(labels.sum())
    if frauds < MIN_FRAUDS_TO_CALIBRATE or labels.size - frauds < MIN_FRAUDS_TO_CALIBRATE:
        raise CalibrationError(
            f"the validation part has {frauds} frauds in {labels.size} rows: too few to calibrate"
            f" (at least {MIN_FRAUDS_TO_CALIBRATE} of each class)"
        )
    model = LogisticRegression(penalty=None, solver="lbfgs", max_iter=1000).fit(raw[:, None], labels)
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if not slope > 0:
        raise CalibrationError(f"the fitted slope is {slope:.3g}: the model does not rank the validation frauds")
    return PlattScaling(
        slope,
        intercept,
        int(labels.size),
        frauds,
        log_loss_before=mean_log_loss(labels, raw),
        log_loss_after=mean_log_loss(labels, slope * raw + intercept),
    )
