"""Platt scaling of the served probabilities: the fit itself, and a trained model whose
served graph carries it (small synthetic data, a few epochs; no AWS)."""

import dataclasses

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score

from fraud_training import tabnet_model
from fraud_training.calibration import CalibrationError, fit_platt, mean_log_loss
from fraud_training.config import PRESETS, ThresholdPolicy, TrainingConfig
from fraud_training.evaluation import choose_threshold
from fraud_training.onnx_export import PARITY_TOLERANCE, export_served_graph, onnx_probabilities
from fraud_training.prepare import prepare
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.synthetic import generate_transactions


def test_platt_recovers_a_known_miscalibration():
    # Labels drawn from true log-odds t; the model reports (t + 3) / 2, as an undersampled
    # model overstates fraud: the fit must find slope 2, intercept -3.
    rng = np.random.default_rng(0)
    true_log_odds = rng.normal(-5.0, 2.5, 200_000)
    labels = (rng.random(true_log_odds.size) < expit(true_log_odds)).astype(np.int8)
    reported = (true_log_odds + 3.0) / 2.0
    calibration = fit_platt(reported, labels)
    assert calibration.slope == pytest.approx(2.0, abs=0.1)
    assert calibration.intercept == pytest.approx(-3.0, abs=0.2)
    assert calibration.log_loss_after < calibration.log_loss_before
    assert calibration.log_loss_after == pytest.approx(mean_log_loss(labels, true_log_odds), rel=0.01)
    assert calibration.frauds == int(labels.sum()) and calibration.rows == labels.size
    np.testing.assert_allclose(calibration.probabilities(reported[:5]), expit(true_log_odds[:5]), rtol=0.3)


def test_too_few_frauds_or_a_model_that_does_not_rank_cannot_calibrate():
    scores = np.linspace(-3, 3, 1000)
    with pytest.raises(CalibrationError, match="4 frauds in 1000 rows"):
        fit_platt(scores, (np.arange(1000) >= 996).astype(np.int8))
    with pytest.raises(CalibrationError, match="slope"):
        fit_platt(scores, (np.arange(1000) < 100).astype(np.int8))  # frauds at the lowest scores


@pytest.fixture(scope="module")
def balanced_model():
    """One network on balanced undersampling (the seed's ratio, on 3 % fraud data): its raw
    probabilities overstate fraud many times over."""
    config = TrainingConfig(seed=11).with_changes(
        {**PRESETS["smoke"], "undersample_ratio": 1.0, "max_epochs": 8, "patience": 8}
    )
    columns = generate_transactions(12_000, seed=6, fraud_rate=0.03)
    features = np.column_stack([columns[name] for name in FEATURE_COLUMNS])
    prepared = prepare(features, columns["Class"].astype(np.int8), config)
    return tabnet_model.train_tabnet(prepared, config), prepared


def test_served_graph_is_calibrated_and_ranks_as_before(balanced_model):
    model, prepared = balanced_model
    assert model.calibration is not None and model.calibration.slope > 0
    uncalibrated = dataclasses.replace(model, calibration=None)
    raw = uncalibrated.predict_fraud_proba(prepared.test_x)
    graph, parity = export_served_graph(model.network, prepared.preprocessor.n_outputs, prepared.test_x)
    served = onnx_probabilities(graph, prepared.test_x)
    assert parity["max_abs_diff"] <= PARITY_TOLERANCE
    expected = model.calibration.probabilities(model.raw_log_odds(prepared.test_x))
    assert np.max(np.abs(served - expected)) <= 1e-4
    assert np.max(np.abs(model.predict_fraud_proba(prepared.test_x) - expected)) <= 1e-6

    rate = prepared.test_y.mean()
    assert raw.mean() > 3 * rate  # balanced training: raw scores overstate fraud
    assert abs(served.mean() - rate) < abs(raw.mean() - rate) / 3
    assert np.mean((served - prepared.test_y) ** 2) < np.mean((raw - prepared.test_y) ** 2)
    # A monotone map: the same ranking, and the same decisions at each one's own threshold.
    assert roc_auc_score(prepared.test_y, served) == pytest.approx(roc_auc_score(prepared.test_y, raw), abs=1e-6)
    assert average_precision_score(prepared.test_y, served) == pytest.approx(
        average_precision_score(prepared.test_y, raw), abs=1e-6
    )
    served_val = onnx_probabilities(graph, prepared.val_x)
    raw_val = uncalibrated.predict_fraud_proba(prepared.val_x)
    served_threshold = choose_threshold(prepared.val_y, served_val, ThresholdPolicy.MAX_F1, 0.8)
    raw_threshold = choose_threshold(prepared.val_y, raw_val, ThresholdPolicy.MAX_F1, 0.8)
    np.testing.assert_array_equal(served >= served_threshold, raw >= raw_threshold)


def test_calibration_can_be_turned_off_and_is_skipped_with_too_few_validation_frauds(balanced_model):
    model, prepared = balanced_model
    few = dataclasses.replace(prepared, val_y=np.where(np.cumsum(prepared.val_y) > 2, 0, prepared.val_y))
    skipped = tabnet_model.calibrate(model, few)
    assert skipped.calibration is None and "2 frauds" in skipped.calibration_skipped
    np.testing.assert_array_equal(
        skipped.predict_fraud_proba(prepared.test_x[:100]),
        dataclasses.replace(model, calibration=None).predict_fraud_proba(prepared.test_x[:100]),
    )
    assert PRESETS["seed"]["calibrate"] is False and TrainingConfig().calibrate is True
