"""A LightGBM baseline on the same split and features, so every run says how far TabNet is
from a strong tree model."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np

from fraud_training.config import TrainingConfig
from fraud_training.evaluation import choose_threshold, evaluate

BASELINE_ROUNDS = 2000
BASELINE_EARLY_STOPPING_ROUNDS = 100


def train_lightgbm(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, seed: int
) -> lgb.LGBMClassifier:
    model = lgb.LGBMClassifier(
        n_estimators=BASELINE_ROUNDS,
        learning_rate=0.03,
        num_leaves=31,
        min_child_samples=20,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=seed,
        n_jobs=2,
        verbose=-1,
    )
    model.fit(
        train_x,
        train_y,
        eval_X=(val_x,),
        eval_y=(val_y,),
        eval_metric="average_precision",
        callbacks=[lgb.early_stopping(BASELINE_EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    return model


def predict_fraud_proba(model: lgb.LGBMClassifier, features: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_proba(features)[:, 1], dtype=np.float64)


def evaluate_lightgbm(config: TrainingConfig, arrays: tuple[np.ndarray, ...]) -> tuple[dict[str, Any], np.ndarray]:
    """Train on the training part; threshold on validation by the run's policy; test metrics.

    Returns
    -------
    (metrics, test scores)
    """
    train_x, train_y, val_x, val_y, test_x, test_y = arrays
    tree = train_lightgbm(train_x, train_y, val_x, val_y, config.seed)
    threshold = choose_threshold(val_y, predict_fraud_proba(tree, val_x), config.threshold_policy, config.target_recall)
    scores = predict_fraud_proba(tree, test_x)
    return evaluate(test_y, scores, threshold, config.bootstrap_rounds, config.seed), scores
