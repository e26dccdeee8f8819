"""TabNet training: the seed's network, early stopping on validation AUPRC, visible progress."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from pytorch_tabnet.callbacks import Callback
from pytorch_tabnet.metrics import Metric
from pytorch_tabnet.tab_model import TabNetClassifier
from sklearn.metrics import average_precision_score

from fraud_training.config import TrainingConfig

log = logging.getLogger(__name__)
VALIDATION_NAME = "val"


class TrainingDataError(ValueError):
    """Settings and data that would make TabNet train on nothing."""


class AUPRC(Metric):
    """Area under the precision-recall curve (average precision), for early stopping."""

    def __init__(self) -> None:
        self._name = "auprc"
        self._maximize = True

    def __call__(self, y_true: np.ndarray, y_score: np.ndarray) -> float:
        return float(average_precision_score(y_true, y_score[:, 1]))


class ProgressLog(Callback):
    """One log line per epoch: loss, validation AUPRC, best so far, elapsed and ETA."""

    def __init__(self, max_epochs: int) -> None:
        super().__init__()
        self.max_epochs = max_epochs
        self.started = 0.0
        self.best = -np.inf

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        metric = float(logs.get(f"{VALIDATION_NAME}_auprc", float("nan")))
        self.best = max(self.best, metric)
        elapsed = time.monotonic() - self.started
        eta = elapsed / (epoch + 1) * (self.max_epochs - epoch - 1)
        log.info(
            "epoch %d/%d  loss %.5f  val_auprc %.4f  best %.4f  elapsed %.0fs  eta <= %.0fs",
            epoch + 1,
            self.max_epochs,
            float(logs.get("loss", float("nan"))),
            metric,
            self.best,
            elapsed,
            eta,
        )


def check_batches(n_train: int, config: TrainingConfig) -> None:
    """TabNet with ``drop_last=True`` and fewer rows than one batch trains on zero batches,
    silently; refuse that with a message that says what to change."""
    if config.drop_last and n_train < config.batch_size:
        raise TrainingDataError(
            f"{n_train} training rows is fewer than batch_size={config.batch_size} with drop_last=true:"
            " TabNet would train on zero batches. Lower batch_size, set drop_last=false, or undersample less."
        )
    if config.virtual_batch_size > config.batch_size:
        raise TrainingDataError(
            f"virtual_batch_size={config.virtual_batch_size} is larger than batch_size={config.batch_size}"
        )


def train_tabnet(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, config: TrainingConfig
) -> TabNetClassifier:
    """Fit a TabNetClassifier; the weights of the best validation-AUPRC epoch are kept."""
    check_batches(train_x.shape[0], config)
    torch.manual_seed(config.seed)
    model = TabNetClassifier(
        n_d=config.n_d,
        n_a=config.n_a,
        n_steps=config.n_steps,
        gamma=config.gamma,
        lambda_sparse=config.lambda_sparse,
        mask_type=config.mask_type,
        optimizer_fn=torch.optim.Adam,
        optimizer_params={"lr": config.learning_rate, "weight_decay": config.weight_decay},
        seed=config.seed,
        verbose=0,
        device_name="auto",
    )
    model.fit(
        train_x,
        train_y,
        eval_set=[(val_x, val_y)],
        eval_name=[VALIDATION_NAME],
        eval_metric=[AUPRC],
        max_epochs=config.max_epochs,
        patience=config.patience,
        batch_size=config.batch_size,
        virtual_batch_size=config.virtual_batch_size,
        drop_last=config.drop_last,
        callbacks=[ProgressLog(config.max_epochs)],
    )
    return model


def predict_fraud_proba(model: TabNetClassifier, features: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_proba(features)[:, 1], dtype=np.float64)


def epoch_history(model: TabNetClassifier) -> list[dict[str, float]]:
    """Per-epoch loss and validation AUPRC, for MLflow."""
    history = model.history.history
    losses = history.get("loss", [])
    auprc = history.get(f"{VALIDATION_NAME}_auprc", [])
    return [{"loss": float(loss), "val_auprc": float(metric)} for loss, metric in zip(losses, auprc, strict=False)]
