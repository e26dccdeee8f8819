"""KS drift: the statistic agrees with scipy.stats.ks_2samp (ties included), p-values and
corrections are the documented ones, and the rule combines them as configured."""

import numpy as np
import pytest
from scipy import stats

from fraudlib.batch import Batch
from fraudlib.drift import (
    Correction,
    DriftConfig,
    KSDriftDetector,
    PValueMethod,
    TimeMode,
    adjust_p_values,
    ks_p_value,
    ks_statistic,
)
from fraudlib.profile import build_reference_profile
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.synthetic import generate_transactions

CASES = [
    ("continuous", lambda rng, n: rng.normal(size=n), lambda rng, m: rng.normal(0.1, 1.1, size=m)),
    (
        "heavy ties",
        lambda rng, n: rng.integers(0, 5, size=n).astype(float),
        lambda rng, m: rng.integers(0, 6, size=m).astype(float),
    ),
    ("all equal", lambda rng, n: np.zeros(n), lambda rng, m: np.zeros(m)),
    ("disjoint", lambda rng, n: rng.uniform(0, 1, size=n), lambda rng, m: rng.uniform(2, 3, size=m)),
    (
        "shared atoms",
        lambda rng, n: np.round(rng.normal(size=n), 1),
        lambda rng, m: np.round(rng.normal(size=m), 1),
    ),
]


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
@pytest.mark.parametrize("name,make_ref,make_batch", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("n,m", [(1000, 37), (50, 2000), (5000, 5000), (1, 1)])
def test_statistic_matches_scipy(name, make_ref, make_batch, n, m):
    rng = np.random.default_rng(n + m)
    reference, sample = make_ref(rng, n), make_batch(rng, m)
    expected = stats.ks_2samp(reference, sample, method="asymp").statistic
    assert abs(ks_statistic(np.sort(reference), sample) - expected) <= 1e-12


def test_statistic_matches_scipy_on_many_random_tied_samples():
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(300):
        n, m = rng.integers(1, 400, size=2)
        levels = rng.integers(1, 30)
        reference = rng.integers(0, levels, size=n).astype(float)
        sample = rng.integers(0, levels, size=m).astype(float) + rng.integers(0, 2)
        expected = stats.ks_2samp(reference, sample, method="asymp").statistic
        worst = max(worst, abs(ks_statistic(np.sort(reference), sample) - expected))
    assert worst <= 1e-12


def test_exact_p_value_is_scipys_two_sample_p_value():
    rng = np.random.default_rng(1)
    reference, sample = rng.normal(size=3000), rng.normal(0.05, 1, size=800)
    scipy_result = stats.ks_2samp(reference, sample, method="asymp")
    ours = ks_p_value(scipy_result.statistic, 3000, 800, PValueMethod.EXACT)
    assert ours == pytest.approx(scipy_result.pvalue, rel=1e-12)


def test_asymptotic_p_value_is_the_kolmogorov_limit():
    d, n, m = 0.05, 10_000, 2_000
    expected = stats.kstwobign.sf(np.sqrt(n * m / (n + m)) * d)
    assert ks_p_value(d, n, m, PValueMethod.ASYMPTOTIC) == pytest.approx(expected, rel=1e-12)
    assert ks_p_value(d, n, m, PValueMethod.ASYMPTOTIC) != ks_p_value(d, n, m, PValueMethod.EXACT)


def test_bonferroni_and_benjamini_hochberg():
    p = np.array([0.001, 0.04, 0.03, 0.5, 0.0004])
    np.testing.assert_allclose(adjust_p_values(p, Correction.NONE), p)
    np.testing.assert_allclose(adjust_p_values(p, Correction.BONFERRONI), np.minimum(p * 5, 1))
    np.testing.assert_allclose(
        adjust_p_values(p, Correction.BENJAMINI_HOCHBERG), stats.false_discovery_control(p, method="bh")
    )


@pytest.fixture(scope="module")
def profile():
    return build_reference_profile(generate_transactions(20_000, seed=1), model_version="v1", data_hash="h")


def batch_of(columns) -> Batch:
    return Batch(features=np.column_stack([columns[name] for name in FEATURE_COLUMNS]), labels=None)


def test_same_distribution_does_not_drift(profile):
    result = KSDriftDetector(profile, DriftConfig()).detect(batch_of(generate_transactions(5000, seed=2)))
    assert not result.drifted
    assert result.drifted_features == []
    assert len(result.features) == 30


def test_shifted_features_drift_and_are_named(profile):
    columns = generate_transactions(5000, seed=2, shift={"V3": 0.6, "Amount": 0.5})
    result = KSDriftDetector(profile, DriftConfig()).detect(batch_of(columns))
    assert result.drifted
    assert result.drifted_features == ["V3", "Amount"]
    v3 = next(f for f in result.features if f.feature == "V3")
    assert v3.statistic >= 0.1 and v3.adjusted_p_value < 0.01


def test_effect_size_floor_keeps_small_but_significant_shifts_from_drifting(profile):
    columns = generate_transactions(20_000, seed=4, shift={"V1": 0.08})
    batch = batch_of(columns)
    floored = KSDriftDetector(profile, DriftConfig()).detect(batch)
    seed_rule = KSDriftDetector(profile, DriftConfig(correction=Correction.NONE, min_statistic=0.0)).detect(batch)
    v1 = next(f for f in floored.features if f.feature == "V1")
    assert v1.significant and not v1.above_floor and not v1.drifted
    assert not floored.drifted
    assert "V1" in seed_rule.drifted_features
    assert "below the effect-size floor" in floored.fired


def test_min_drifted_features_rule(profile):
    batch = batch_of(generate_transactions(5000, seed=2, shift={"V3": 0.6, "Amount": 0.5}))
    assert KSDriftDetector(profile, DriftConfig(min_drifted_features=2)).detect(batch).drifted
    assert not KSDriftDetector(profile, DriftConfig(min_drifted_features=3)).detect(batch).drifted


def test_later_batch_drifts_on_raw_time_but_not_on_time_of_day(profile):
    later = batch_of(generate_transactions(5000, seed=3, start_time_s=3 * 86_400))
    by_time_of_day = KSDriftDetector(profile, DriftConfig()).detect(later)
    by_raw_time = KSDriftDetector(profile, DriftConfig(time_mode=TimeMode.RAW)).detect(later)
    assert not by_time_of_day.drifted
    assert by_time_of_day.features[0].tested_as == "Time_of_day"
    assert by_raw_time.drifted_features == ["Time"]


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="p_value_threshold"):
        DriftConfig(p_value_threshold=0)
    with pytest.raises(ValueError, match="min_drifted_features"):
        DriftConfig(min_drifted_features=0)
