"""A TabNet ensemble: members trained on their own undersampling draws, served as one graph
whose probability is the members' mean (small synthetic data, a few epochs; no AWS)."""

import zipfile

import numpy as np
import pytest
from pytorch_tabnet.tab_model import TabNetClassifier

from fraud_training import tabnet_model
from fraud_training.config import PRESETS, TrainingConfig
from fraud_training.onnx_export import (
    PARITY_TOLERANCE,
    Precision,
    explain_network,
    export_explain_graph,
    export_served_graph,
    onnx_probabilities,
    reference_network,
    torch_probabilities,
)
from fraud_training.prepare import prepare
from fraudlib.layout import tabnet_member_filename
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.synthetic import generate_transactions


def _prepared(config):
    columns = generate_transactions(6000, seed=4, fraud_rate=0.03)
    features = np.column_stack([columns[name] for name in FEATURE_COLUMNS])
    return prepare(features, columns["Class"].astype(np.int8), config)


def test_members_draw_their_own_majority_rows_at_the_same_ratio():
    prepared = _prepared(TrainingConfig(undersample_ratio=0.2, seed=3))
    first_x, first_y = prepared.member_training_set(0)
    second_x, second_y = prepared.member_training_set(1)
    assert first_x is prepared.train_x
    frauds = int(prepared.every_train_y.sum())
    assert int(first_y.sum()) == int(second_y.sum()) == frauds
    assert len(first_y) == len(second_y) == frauds + round(frauds / 0.2)
    first_rows = {row.tobytes() for row in first_x[first_y == 0]}
    second_rows = {row.tobytes() for row in second_x[second_y == 0]}
    assert first_rows != second_rows and len(first_rows & second_rows) < len(first_rows)
    again_x, _ = prepared.member_training_set(1)
    np.testing.assert_array_equal(again_x, second_x)  # seeded
    every = _prepared(TrainingConfig(undersample_ratio=None)).member_training_set(2)
    assert len(every[1]) == len(_prepared(TrainingConfig()).every_train_y)


def test_ensemble_size_below_one_is_refused():
    with pytest.raises(tabnet_model.TrainingDataError, match="ensemble_size=0"):
        tabnet_model.train_tabnet(_prepared(TrainingConfig()), TrainingConfig(ensemble_size=0))


@pytest.fixture(scope="module")
def ensemble():
    config = TrainingConfig(seed=5).with_changes(
        {**PRESETS["smoke"], "undersample_ratio": 0.1, "ensemble_size": 3, "max_epochs": 3}
    )
    prepared = _prepared(config)
    return tabnet_model.train_tabnet(prepared, config), prepared


def test_served_graph_is_the_members_mean(ensemble, tmp_path):
    model, prepared = ensemble
    assert len(model.members) == 3 and len(model.epochs) == 3
    graph, parity = export_served_graph(model.network, prepared.preprocessor.n_outputs, prepared.test_x)
    served = onnx_probabilities(graph, prepared.test_x)
    members = np.array(
        [torch_probabilities(reference_network(member.network), prepared.test_x) for member in model.members]
    )
    assert np.max(np.abs(served - members.mean(axis=0))) <= PARITY_TOLERANCE
    assert parity["max_abs_diff"] <= PARITY_TOLERANCE
    # The members are different models, so the mean is not any one of them.
    assert min(np.max(np.abs(served - member)) for member in members) > 1e-4
    assert np.max(np.abs(model.predict_fraud_proba(prepared.test_x) - members.mean(axis=0))) <= 1e-4

    explain, worst, _ = export_explain_graph(
        model.network, prepared.preprocessor.n_outputs, prepared.test_x[:200], Precision(parity["precision"])
    )
    shares = onnx_probabilities(explain, prepared.test_x[:200])
    per_member = np.array(
        [torch_probabilities(explain_network(member.network, None), prepared.test_x[:200]) for member in model.members]
    )
    assert worst <= PARITY_TOLERANCE
    np.testing.assert_allclose(shares, per_member.mean(axis=0), atol=PARITY_TOLERANCE)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-6)


def test_every_member_is_saved_and_loads_back(ensemble, tmp_path):
    model, prepared = ensemble
    files = model.save(tmp_path)
    assert sorted(files) == sorted(tabnet_member_filename(index) for index in range(3))
    assert sorted(files) == ["tabnet-1.zip", "tabnet-2.zip", "tabnet.zip"]
    for index, member in enumerate(model.members):
        path = tmp_path / f"loaded-{index}.zip"
        path.write_bytes(files[tabnet_member_filename(index)])
        assert zipfile.is_zipfile(path)
        loaded = TabNetClassifier()
        loaded.load_model(str(path))
        np.testing.assert_allclose(
            loaded.predict_proba(prepared.test_x[:50]), member.predict_proba(prepared.test_x[:50]), atol=1e-6
        )
    history = model.epoch_history()
    assert {"loss", "val_auprc", "member1_loss", "member2_val_auprc"} <= set(history[0])
