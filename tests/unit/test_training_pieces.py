"""The training job's parts, on small synthetic data: no AWS, no MLflow."""

import json

import numpy as np
import pytest

from fraud_training.config import PRESETS, ConfigError, SplitMode, ThresholdPolicy, TrainingConfig, load_config
from fraud_training.data import drop_duplicates, stack
from fraud_training.evaluation import choose_threshold, precision_at_recall, recall_at_fpr
from fraud_training.gate import decide
from fraud_training.split import split_rows, undersample
from fraud_training.tabnet_model import TrainingDataError, check_batches
from fraudlib.batch import Batch
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.synthetic import generate_transactions


def dataset(n=5000, seed=0, fraud_rate=0.02):
    columns = generate_transactions(n, seed=seed, fraud_rate=fraud_rate)
    return np.column_stack([columns[name] for name in FEATURE_COLUMNS]), columns["Class"].astype(np.int8)


def test_stratified_split_is_60_20_20_with_the_fraud_rate_kept():
    features, labels = dataset()
    split = split_rows(features, labels, SplitMode.STRATIFIED, seed=1)
    sizes = [len(part) for part in (split.train, split.validation, split.test)]
    assert sizes == [3000, 1000, 1000]
    assert len(np.intersect1d(split.train, split.test)) == 0
    rates = [labels[part].mean() for part in (split.train, split.validation, split.test)]
    assert max(rates) - min(rates) < 0.004
    again = split_rows(features, labels, SplitMode.STRATIFIED, seed=1)
    np.testing.assert_array_equal(split.test, again.test)


def test_time_split_trains_on_the_past():
    features, labels = dataset()
    features = features[::-1].copy()  # rows out of time order
    split = split_rows(features, labels[::-1], SplitMode.TIME, seed=1)
    time_s = features[:, 0]
    assert time_s[split.train].max() <= time_s[split.validation].min()
    assert time_s[split.validation].max() <= time_s[split.test].min()


def test_undersampling_ratio():
    features, labels = dataset()
    same = undersample(features, labels, None, seed=0)
    assert same[0] is features
    _, balanced_y = undersample(features, labels, 1.0, seed=0)
    assert balanced_y.sum() == labels.sum() and len(balanced_y) == 2 * labels.sum()
    _, mild_y = undersample(features, labels, 0.1, seed=0)
    assert len(mild_y) == labels.sum() + labels.sum() * 10
    with pytest.raises(ValueError, match="undersample_ratio"):
        undersample(features, labels, 2.0, seed=0)
    # 2 % fraud is already more balanced than 1:100: nothing to remove.
    kept = undersample(features, labels, 0.01, seed=0)
    assert kept[0] is features and kept[1] is labels


def test_exact_duplicates_are_dropped_keeping_order():
    features, labels = dataset(100)
    doubled_x = np.concatenate([features, features[:10]])
    doubled_y = np.concatenate([labels, labels[:10]])
    kept_x, kept_y, dropped = drop_duplicates(doubled_x, doubled_y)
    assert dropped == 10
    np.testing.assert_array_equal(kept_x, features)
    np.testing.assert_array_equal(kept_y, labels)


def test_data_hash_follows_content():
    features, labels = dataset(300)
    a = stack([("a", Batch(features, labels))])
    b = stack([("b", Batch(features.copy(), labels.copy()))])
    changed = features.copy()
    changed[5, 3] += 1e-9
    c = stack([("c", Batch(changed, labels))])
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_precision_at_recall_and_recall_at_fpr_on_a_hand_example():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.4, 0.2, 0.7, 0.3, 0.1, 0.05, 0.02, 0.01])
    # recall >= 0.8 needs 4 of 4 or ... threshold 0.2: 4 TP and 2 FP (0.7, 0.3) -> precision 4/6
    assert precision_at_recall(labels, scores, 0.8) == pytest.approx(4 / 6)
    # FPR <= 1/6 allows one false positive (0.7): threshold 0.4 keeps 0.9, 0.8, 0.4 -> recall 3/4
    assert recall_at_fpr(labels, scores, 1 / 6) == pytest.approx(0.75)
    assert recall_at_fpr(labels, scores, 0.0) == pytest.approx(0.5)


def test_threshold_policies():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.4, 0.2, 0.7, 0.3, 0.1, 0.05, 0.02, 0.01])
    assert choose_threshold(labels, scores, ThresholdPolicy.TARGET_RECALL, 0.75) == pytest.approx(0.4)
    assert choose_threshold(labels, scores, ThresholdPolicy.TARGET_RECALL, 1.0) == pytest.approx(0.2)
    # F1 at 0.4: P 3/4, R 3/4 -> 0.75; at 0.2: P 4/6, R 1 -> 0.8, the best
    assert choose_threshold(labels, scores, ThresholdPolicy.MAX_F1, 0.0) == pytest.approx(0.2)


def test_gate():
    config = TrainingConfig(gate_tolerance=0.01, min_auprc=0.3, min_roc_auc=0.8)
    assert decide({"auprc": 0.5, "roc_auc": 0.9}, config).promote
    refused = decide({"auprc": 0.2, "roc_auc": 0.9}, config)
    assert not refused.promote and "AUPRC 0.2000 < floor 0.3" in refused.reason
    assert decide({"auprc": 0.695, "roc_auc": 0.9}, config, champion_auprc=0.70, champion_version="v1").promote
    kept = decide({"auprc": 0.68, "roc_auc": 0.99}, config, champion_auprc=0.70, champion_version="v1")
    assert not kept.promote and kept.reason.startswith("kept champion v1")


def test_zero_batch_guard():
    config = TrainingConfig(batch_size=1024, drop_last=True)
    with pytest.raises(TrainingDataError, match="zero batches"):
        check_batches(590, config)
    check_batches(590, config.with_changes({"drop_last": False}))
    check_batches(2000, config)


def test_config_precedence(tmp_path):
    hyperparameters = tmp_path / "hyperparameters.json"
    hyperparameters.write_text(json.dumps({"max-epochs": "7", "patience": "3", "split": "time", "n_d": "16"}))
    env = {"TRAIN_PATIENCE": "4", "TRAIN_N_D": "32", "TRAINING_JOB_ID": "retrain-1"}
    config = load_config(["--n-d", "8", "--preset", "seed"], env, hyperparameters)
    assert config.max_epochs == 7  # hyperparameters over defaults
    assert config.patience == 4  # environment over hyperparameters
    assert config.n_d == 8  # CLI over everything
    assert config.split is SplitMode.TIME
    assert config.undersample_ratio == PRESETS["seed"]["undersample_ratio"]
    assert config.job_id == "retrain-1"
    assert load_config(["--undersample-ratio", "none"], {}, tmp_path / "absent.json").undersample_ratio is None


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match="max_epochs"):
        load_config(["--max-epochs", "many"], {}, tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="unknown setting TRAIN_EPOCHS"):
        load_config([], {"TRAIN_EPOCHS": "3"}, tmp_path / "absent.json")


def test_sagemaker_channels_are_read_instead_of_s3(tmp_path):
    from fraud_training.data import _channel_copy

    (tmp_path / "incoming" / "2024").mkdir(parents=True)
    (tmp_path / "incoming" / "2024" / "day 2.csv").write_text("x")
    uri = "s3://in/incoming/2024/day 2.csv"
    assert _channel_copy(uri, tmp_path, "incoming", "incoming/") == str(tmp_path / "incoming/2024/day 2.csv")
    assert (
        _channel_copy("s3://in/incoming/other.csv", tmp_path, "incoming", "incoming/") == "s3://in/incoming/other.csv"
    )
    assert _channel_copy(uri, None, "incoming", "incoming/") == uri


def test_entrypoint_accepts_sagemakers_train_argument_and_names_bad_settings(caplog, monkeypatch):
    import entrypoint

    monkeypatch.setenv("ARTIFACTS_BUCKET", "unused")
    assert entrypoint.main(["train", "--max-epochs", "many"]) == 2
    assert "max_epochs='many'" in caplog.text


def test_gate_compares_on_the_newest_batch_when_it_has_enough_frauds():
    from fraud_training.job import MIN_GATE_FRAUDS, gate_rows

    base_x, base_y = dataset(3000, seed=1, fraud_rate=0.02)
    new_x, new_y = dataset(2000, seed=2, fraud_rate=0.05)
    data = stack([("base", Batch(base_x, base_y)), ("s3://in/incoming/day-9.csv", Batch(new_x, new_y))])
    test_rows = np.arange(0, data.n_rows, 3)
    mask, reason = gate_rows(data, test_rows, data.labels[test_rows])
    assert (data.origin[test_rows][mask] == 1).all() and mask.sum() == (data.origin[test_rows] == 1).sum()
    assert "newest labelled batch s3://in/incoming/day-9.csv" in reason
    only_base = stack([("base", Batch(base_x, base_y))])
    mask, reason = gate_rows(only_base, test_rows[:900], only_base.labels[test_rows[:900]])
    assert mask.all() and "no labelled batch" in reason
    few_y = np.zeros_like(new_y)
    few_y[:3] = 1
    few = stack([("base", Batch(base_x, base_y)), ("new", Batch(new_x, few_y))])
    mask, reason = gate_rows(few, test_rows, few.labels[test_rows])
    assert mask.all() and f"fewer than {MIN_GATE_FRAUDS}" in reason
