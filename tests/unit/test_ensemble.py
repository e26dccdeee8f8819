"""A TabNet ensemble: members trained on their own undersampling draws, served as one graph
whose probability is the members' mean, or distilled into one network that is served instead
(small synthetic data, a few epochs; no AWS)."""

import dataclasses
import zipfile

import numpy as np
import pytest
from pytorch_tabnet.tab_model import TabNetClassifier, TabNetRegressor

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
from fraudlib.layout import TABNET_STUDENT_FILENAME, tabnet_member_filename
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
        {**PRESETS["smoke"], "undersample_ratio": 0.1, "ensemble_size": 3, "max_epochs": 3, "distill": False}
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
    # The members' mean probability, through the Platt scaling fitted on validation.
    mean = members.mean(axis=0)
    expected = model.calibration.probabilities(np.log(mean) - np.log1p(-mean))
    assert np.max(np.abs(served - expected)) <= PARITY_TOLERANCE
    assert parity["max_abs_diff"] <= PARITY_TOLERANCE
    # The members are different models, so the mean is not any one of them.
    assert (
        min(np.max(np.abs(served - model.calibration.probabilities(np.log(m) - np.log1p(-m)))) for m in members) > 1e-4
    )
    assert np.max(np.abs(model.predict_fraud_proba(prepared.test_x) - expected)) <= 1e-4
    uncalibrated = dataclasses.replace(model, calibration=None)
    assert np.max(np.abs(uncalibrated.predict_fraud_proba(prepared.test_x) - mean)) <= 1e-4

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


@pytest.fixture(scope="module")
def distilled():
    config = TrainingConfig(seed=6).with_changes(
        {
            **PRESETS["smoke"],
            "undersample_ratio": 0.1,
            "ensemble_size": 3,
            "max_epochs": 3,
            "distill": True,
            "distill_undersample_ratio": 0.1,
            "distill_max_epochs": 40,
            "distill_patience": 40,
        }
    )
    prepared = _prepared(config)
    return tabnet_model.train_tabnet(prepared, config), prepared


def test_distilled_student_learns_the_members_mean_log_odds(distilled):
    model, prepared = distilled
    assert model.student is not None and len(model.members) == 3
    frauds = int(prepared.every_train_y.sum())
    assert model.student_rows == frauds + round(frauds / 0.1)  # every fraud and its own draw of the rest
    teacher = tabnet_model.log_odds(model.teacher_fraud_proba(prepared.test_x))
    student = model.student.predict(prepared.test_x)[:, 0]
    # On rows it never saw, the student follows the teacher better than the best constant
    # would (1,300 synthetic rows and 40 short epochs: far from a perfect copy).
    assert np.mean((student - teacher) ** 2) < 0.9 * np.var(teacher)
    assert np.corrcoef(student, teacher)[0, 1] > 0.4
    losses = [row["student_loss"] for row in model.epoch_history() if "student_loss" in row]
    assert losses[-1] < 0.5 * losses[0]


def test_distilled_model_serves_the_student_alone(distilled):
    model, prepared = distilled
    graph, parity = export_served_graph(model.network, prepared.preprocessor.n_outputs, prepared.test_x)
    served = onnx_probabilities(graph, prepared.test_x)
    student = model.calibration.probabilities(torch_probabilities_of_log_odds(model.student.network, prepared.test_x))
    assert parity["max_abs_diff"] <= PARITY_TOLERANCE
    assert np.max(np.abs(served - student)) <= PARITY_TOLERANCE
    assert np.max(np.abs(model.predict_fraud_proba(prepared.test_x) - student)) <= 1e-4
    # Not the members' mean: the graph holds one network.
    assert np.max(np.abs(served - model.teacher_fraud_proba(prepared.test_x))) > 1e-4

    explain, worst, _ = export_explain_graph(
        model.network, prepared.preprocessor.n_outputs, prepared.test_x[:200], Precision(parity["precision"])
    )
    own = torch_probabilities(explain_network(model.student.network, None), prepared.test_x[:200])
    assert worst <= PARITY_TOLERANCE
    np.testing.assert_allclose(onnx_probabilities(explain, prepared.test_x[:200]), own, atol=PARITY_TOLERANCE)


def torch_probabilities_of_log_odds(network, inputs):
    import torch

    copy = __import__("copy").deepcopy(network).double().eval()
    for module in copy.modules():  # plain tensor attributes (the group matrix) as well
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                setattr(module, name, value.double())
    with torch.no_grad():
        return copy(torch.from_numpy(inputs.astype(np.float64)))[0][:, 0].numpy()


def test_distilled_bundle_keeps_members_and_student(distilled, tmp_path):
    model, prepared = distilled
    files = model.save(tmp_path)
    assert sorted(files) == ["tabnet-1.zip", "tabnet-2.zip", TABNET_STUDENT_FILENAME, "tabnet.zip"]
    path = tmp_path / "student-loaded.zip"
    path.write_bytes(files[TABNET_STUDENT_FILENAME])
    loaded = TabNetRegressor()
    loaded.load_model(str(path))
    np.testing.assert_allclose(
        loaded.predict(prepared.test_x[:50]), model.student.predict(prepared.test_x[:50]), atol=1e-6
    )
    history = model.epoch_history()
    assert {"loss", "member2_val_auprc", "student_loss", "student_val_auprc"} <= set(history[0])
    assert model.student_epochs == len([row for row in history if "student_loss" in row])


def test_log_odds_are_finite_at_probabilities_zero_and_one():
    odds = tabnet_model.log_odds(np.array([0.0, 0.5, 1.0], dtype=np.float32))
    np.testing.assert_allclose(odds, [-tabnet_model.LOG_ODDS_LIMIT, 0.0, tabnet_model.LOG_ODDS_LIMIT])


def _encoder_parameters(network):
    """The TabNet encoder's trainable weights by the pretrainer's names (a classifier's and a
    regressor's sit under ``tabnet.``, the pretrainer's not); batch-norm statistics excluded."""
    names = {}
    for name, value in network.named_parameters():
        if name.startswith("tabnet.encoder."):
            names[name.removeprefix("tabnet.")] = value.detach().numpy().copy()
        elif name.startswith("encoder."):
            names[name] = value.detach().numpy().copy()
    return names


def test_every_network_starts_from_the_pretrained_encoder():
    # Learning rate 0: fine-tuning changes no weight, so each member and the student must still
    # hold exactly the pretrainer's encoder weights. Without pretraining they would hold their
    # own seeds' random initialisation.
    config = TrainingConfig(seed=8).with_changes(
        {
            **PRESETS["smoke"],
            "undersample_ratio": 0.1,
            "ensemble_size": 2,
            "max_epochs": 1,
            "distill_undersample_ratio": 0.1,
            "distill_max_epochs": 1,
            "learning_rate": 0.0,
            "pretrain_max_epochs": 1,
        }
    )
    prepared = _prepared(config)
    model = tabnet_model.train_tabnet(prepared, config)
    pretrained = _encoder_parameters(model.pretrainer.network)
    assert len(pretrained) > 10
    for network in [member.network for member in model.members] + [model.student.network]:
        own = _encoder_parameters(network)
        assert own.keys() == pretrained.keys()
        for name, weights in pretrained.items():
            np.testing.assert_array_equal(own[name], weights, err_msg=name)
    unpretrained = tabnet_model.train_tabnet(prepared, config.with_changes({"pretrain_max_epochs": 0}))
    assert unpretrained.pretraining is None and unpretrained.pretrainer is None
    differs = _encoder_parameters(unpretrained.members[1].network)
    assert any(not np.array_equal(differs[name], weights) for name, weights in pretrained.items())


def test_pretraining_learns_from_every_training_row_without_labels():
    config = TrainingConfig(seed=9).with_changes(
        {**PRESETS["smoke"], "undersample_ratio": 0.1, "pretrain_max_epochs": 8, "pretrain_patience": 8}
    )
    prepared = _prepared(config)
    pretrainer, summary = tabnet_model.pretrain(prepared, config)
    # Every training row, not the undersampled draw the members learn from.
    assert summary.rows == len(prepared.every_train_y) > 2 * len(prepared.train_y)
    assert summary.epochs == 8 and summary.seconds > 0
    losses = pretrainer.history.history[f"{tabnet_model.VALIDATION_NAME}_{tabnet_model.PRETRAINER_METRIC}"]
    assert summary.best_validation_loss == min(losses) < losses[0]
    # The labels play no part: the same rows with the labels flipped pretrain the same weights.
    flipped = dataclasses.replace(prepared, every_train_y=1 - prepared.every_train_y)
    again, _ = tabnet_model.pretrain(flipped, config)
    np.testing.assert_array_equal(again.history.history["loss"], pretrainer.history.history["loss"])
    assert tabnet_model.pretrain(prepared, config.with_changes({"pretrain_max_epochs": 0})) == (None, None)


def test_pretraining_ratio_outside_zero_to_one_is_refused():
    config = TrainingConfig().with_changes({**PRESETS["smoke"], "pretrain_max_epochs": 1, "pretraining_ratio": 1.0})
    with pytest.raises(tabnet_model.TrainingDataError, match=r"pretraining_ratio=1\.0"):
        tabnet_model.pretrain(_prepared(config), config)
