"""A LightGBM baseline on the same split and features, so every run says how far TabNet is
from a strong tree model."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

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
