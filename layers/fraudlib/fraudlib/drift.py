"""Kolmogorov-Smirnov drift detection of a batch against the reference profile.

The detector is configured once (profile, p-value threshold, correction, effect-size floor)
and returns a result with the batch decision and, per feature, the statistic, the p-value and
whether it drifted.

Why an effect-size floor: with tens of thousands of rows, a KS statistic of 0.006 is already
significant at p < 0.01, so p-values alone flag every real batch. A feature drifts only when
its (corrected) p-value is below the threshold *and* its statistic reaches the floor.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import stats

from fraudlib.batch import Batch
from fraudlib.features import TIME_OF_DAY_FEATURE, time_of_day_s
from fraudlib.profile import ReferenceProfile
from fraudlib.schema import FEATURE_COLUMNS, TIME_COLUMN


class Correction(StrEnum):
    """Multiple-testing correction across the features of one batch."""

    NONE = "none"
    BONFERRONI = "bonferroni"
    BENJAMINI_HOCHBERG = "benjamini-hochberg"


class PValueMethod(StrEnum):
    """How the p-value of a KS statistic is computed.

    ``exact``: ``scipy.stats.kstwo`` at the effective size ``round(n*m/(n+m))``, which is
    what ``scipy.stats.ks_2samp(method="asymp")`` returns. Costly for large samples:
    scipy sums ``n`` terms, about 0.15 s per feature at an effective size of 10^5.
    ``asymptotic``: the Kolmogorov limit ``kstwobign`` at ``sqrt(n*m/(n+m)) * D``; instant,
    and slightly conservative (measured: 1.1 % above the exact p at 10^4, 0.3 % at 10^5,
    near p = 0.01).
    ``auto``: exact up to an effective size of ``AUTO_EXACT_MAX_EFFECTIVE_N``, asymptotic
    above, like ``ks_2samp``'s own ``auto``.
    """

    EXACT = "exact"
    ASYMPTOTIC = "asymptotic"
    AUTO = "auto"


AUTO_EXACT_MAX_EFFECTIVE_N = 10_000
KS_THREADS = max(1, min(4, os.cpu_count() or 1))


class TimeMode(StrEnum):
    """How ``Time`` is tested. ``Time`` is a running clock, so a later batch drifts on it by
    construction; ``time_of_day`` tests ``Time mod 86400`` (seconds since midnight) instead."""

    TIME_OF_DAY = "time_of_day"
    RAW = "raw"


@dataclass(frozen=True)
class DriftConfig:
    """The drift rule.

    Attributes
    ----------
    p_value_threshold : float
        A feature is significant when its (corrected) p-value is below this (seed: 0.01).
    correction : Correction
        Multiple-testing correction over the tested features.
    min_statistic : float
        Effect-size floor: the KS statistic must reach this for a feature to drift.
    min_drifted_features : int
        The batch drifts when at least this many features drift.
    p_value_method : PValueMethod
    time_mode : TimeMode
    """

    p_value_threshold: float = 0.01
    correction: Correction = Correction.BONFERRONI
    min_statistic: float = 0.1
    min_drifted_features: int = 1
    p_value_method: PValueMethod = PValueMethod.AUTO
    time_mode: TimeMode = TimeMode.TIME_OF_DAY

    def __post_init__(self) -> None:
        if not 0.0 < self.p_value_threshold < 1.0:
            raise ValueError(f"p_value_threshold must be in (0, 1), got {self.p_value_threshold}")
        if not 0.0 <= self.min_statistic <= 1.0:
            raise ValueError(f"min_statistic must be in [0, 1], got {self.min_statistic}")
        if self.min_drifted_features < 1:
            raise ValueError(f"min_drifted_features must be >= 1, got {self.min_drifted_features}")

    def describe(self, n_features: int) -> str:
        """The rule in words, as written into every report."""
        correction = {
            Correction.NONE: "uncorrected",
            Correction.BONFERRONI: f"Bonferroni-corrected (x{n_features})",
            Correction.BENJAMINI_HOCHBERG: "Benjamini-Hochberg-adjusted",
        }[self.correction]
        return (
            f"batch drifts when >= {self.min_drifted_features} of {n_features} features drift;"
            f" a feature drifts when its {correction} KS p-value < {self.p_value_threshold:g}"
            f" and its KS statistic >= {self.min_statistic:g}"
        )


@dataclass(frozen=True)
class FeatureDrift:
    """The KS test of one feature.

    ``p_value`` is the raw p-value; ``adjusted_p_value`` is after the correction;
    ``significant`` compares the adjusted one with the threshold; ``above_floor`` compares
    the statistic with the effect-size floor; ``drifted`` is both.
    """

    feature: str
    tested_as: str
    statistic: float
    p_value: float
    adjusted_p_value: float
    significant: bool
    above_floor: bool

    @property
    def drifted(self) -> bool:
        return self.significant and self.above_floor


@dataclass(frozen=True)
class DriftResult:
    """The decision for one batch."""

    drifted: bool
    features: tuple[FeatureDrift, ...]
    rule: str
    fired: str
    n_reference: int
    n_batch: int
    time_mode: TimeMode
    p_value_method: PValueMethod
    """The method actually used (``auto`` resolved for these sample sizes)."""

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]


def _sup_distance_at(points: np.ndarray, other: np.ndarray) -> float:
    """``sup |F_points - F_other|`` evaluated at the jumps of ``points`` (both sorted).

    The supremum of ``F_points - F_other`` is reached at a value of ``points`` (right
    limits), and the supremum of ``F_other - F_points`` just before one (left limits), so
    the values of ``points`` are the only places to look. Within a run of tied values the
    last position gives the true right limit and the first the true left limit; the max
    over the run takes care of the rest.

    The differences are kept as exact integers scaled by ``n_points * n_other`` and divided
    once at the end, which also saves the float temporaries.
    """
    n_points = points.shape[0]
    n_other = other.shape[0]
    other_at_or_below = np.searchsorted(other, points, side="right")
    # gap[i] = (i+1)*n_other - other_at_or_below[i]*n_points = n_p*n_o*(F_points - F_other)
    gap = np.arange(n_other, (n_points + 1) * n_other, n_other, dtype=np.int64)
    gap -= other_at_or_below * n_points
    points_over_other = int(gap.max())
    # Just before points[i]: n_p*n_o*(F_other - F_points) = below[i]*n_points - i*n_other,
    # which is n_other - gap[i] unless points[i] equals a value of ``other`` ("below" then
    # differs from "at or below"); search again just for those (continuous features have
    # next to none) and store their value in the same form.
    tied = np.flatnonzero(other[np.maximum(other_at_or_below - 1, 0)] == points)
    tied = tied[other_at_or_below[tied] > 0]
    if tied.size:
        other_below = np.searchsorted(other, points[tied], side="left")
        gap[tied] = n_other - (other_below * n_points - tied * n_other)
    other_over_points = n_other - int(gap.min())
    return max(points_over_other, other_over_points, 0) / (n_points * n_other)


def ks_statistic(reference_sorted: np.ndarray, sample: np.ndarray) -> float:
    """Two-sample KS statistic, exactly as ``scipy.stats.ks_2samp`` computes it, ties included.

    Parameters
    ----------
    reference_sorted : ndarray
        Reference sample, sorted ascending (sorted once, when the profile was built).
    sample : ndarray
        The batch's values of the same feature, in any order.

    Returns
    -------
    float
        ``sup |F_ref - F_sample|`` over the real line.

    Notes
    -----
    Only the batch is sorted. Both ECDFs are evaluated at the values of the smaller of the
    two samples, found in the larger one by binary search, which is all the supremum needs
    (see ``_sup_distance_at``).
    """
    sample_sorted = np.sort(sample)
    if sample_sorted.shape[0] <= reference_sorted.shape[0]:
        return _sup_distance_at(sample_sorted, reference_sorted)
    return _sup_distance_at(reference_sorted, sample_sorted)


def resolve_p_value_method(method: PValueMethod, n_reference: int, n_batch: int) -> PValueMethod:
    """The method ``auto`` stands for at these sample sizes (others stand for themselves)."""
    if method is not PValueMethod.AUTO:
        return method
    effective_n = n_reference * n_batch / (n_reference + n_batch)
    return PValueMethod.EXACT if effective_n <= AUTO_EXACT_MAX_EFFECTIVE_N else PValueMethod.ASYMPTOTIC


def ks_p_value(statistic: float, n_reference: int, n_batch: int, method: PValueMethod) -> float:
    """Two-sided p-value of a two-sample KS statistic; see :class:`PValueMethod`."""
    effective_n = n_reference * n_batch / (n_reference + n_batch)
    if resolve_p_value_method(method, n_reference, n_batch) is PValueMethod.EXACT:
        # At least 1: for two single values the rounded size would be 0 (scipy divides by it).
        p = stats.kstwo.sf(statistic, max(1.0, float(np.round(effective_n))))
    else:
        p = stats.kstwobign.sf(np.sqrt(effective_n) * statistic)
    return float(np.clip(p, 0.0, 1.0))


def adjust_p_values(p_values: np.ndarray, correction: Correction) -> np.ndarray:
    """Apply a multiple-testing correction to the p-values of one batch."""
    m = p_values.shape[0]
    if correction is Correction.NONE:
        return p_values.copy()
    if correction is Correction.BONFERRONI:
        return np.minimum(p_values * m, 1.0)
    order = np.argsort(p_values)
    scaled = p_values[order] * m / np.arange(1, m + 1)
    adjusted_sorted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    adjusted = np.empty_like(adjusted_sorted)
    adjusted[order] = adjusted_sorted
    return adjusted


class KSDriftDetector:
    """Per-feature KS drift against one reference profile.

    Parameters
    ----------
    profile : ReferenceProfile
    config : DriftConfig
    """

    def __init__(self, profile: ReferenceProfile, config: DriftConfig) -> None:
        self.profile = profile
        self.config = config
        time_as = TIME_OF_DAY_FEATURE if config.time_mode is TimeMode.TIME_OF_DAY else TIME_COLUMN
        self._tested_as = {name: (time_as if name == TIME_COLUMN else name) for name in FEATURE_COLUMNS}

    def detect(self, batch: Batch) -> DriftResult:
        """Test every feature of ``batch`` and decide whether the batch drifted."""

        def test_feature(name: str) -> tuple[float, float]:
            values = batch.column(name)
            if self._tested_as[name] == TIME_OF_DAY_FEATURE:
                values = time_of_day_s(values)
            reference = self.profile.sorted_values[self._tested_as[name]]
            statistic = ks_statistic(reference, values)
            p_value = ks_p_value(statistic, reference.shape[0], batch.n_rows, self.config.p_value_method)
            return statistic, p_value

        # NumPy's sort and searchsorted release the GIL: features run on all cores.
        with ThreadPoolExecutor(max_workers=KS_THREADS, thread_name_prefix="ks") as pool:
            tested = list(pool.map(test_feature, FEATURE_COLUMNS))
        statistics = np.array([statistic for statistic, _ in tested])
        p_values = np.array([p_value for _, p_value in tested])
        adjusted = adjust_p_values(p_values, self.config.correction)
        features = tuple(
            FeatureDrift(
                feature=name,
                tested_as=self._tested_as[name],
                statistic=float(statistics[i]),
                p_value=float(p_values[i]),
                adjusted_p_value=float(adjusted[i]),
                significant=bool(adjusted[i] < self.config.p_value_threshold),
                above_floor=bool(statistics[i] >= self.config.min_statistic),
            )
            for i, name in enumerate(FEATURE_COLUMNS)
        )
        n_drifted = sum(f.drifted for f in features)
        n_significant = sum(f.significant for f in features)
        drifted = n_drifted >= self.config.min_drifted_features
        fired = (
            f"{n_drifted} features drifted (>= {self.config.min_drifted_features} required);"
            f" {n_significant} were significant by p-value,"
            f" {n_significant - n_drifted} of those stayed below the effect-size floor"
            f" D >= {self.config.min_statistic:g}"
        )
        return DriftResult(
            drifted=drifted,
            features=features,
            rule=self.config.describe(len(features)),
            fired=fired,
            n_reference=self.profile.n_rows,
            n_batch=batch.n_rows,
            time_mode=self.config.time_mode,
            p_value_method=resolve_p_value_method(self.config.p_value_method, self.profile.n_rows, batch.n_rows),
        )
