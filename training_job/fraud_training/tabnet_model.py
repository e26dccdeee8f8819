"""TabNet training: the seed's network, early stopping on validation AUPRC, visible progress,
and an ensemble of such networks served as one.

An ensemble's members differ in their seed and, when the training part is undersampled, in
their draw of the majority class; the served probability is the members' mean. Measured on
the real data (one stratified split): three members scored ROC-AUC 0.974 / AUPRC 0.799 where
the members alone scored 0.952-0.965 / 0.745-0.796 (``bench/train_quality.py`` has the
protocol).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_tabnet.callbacks import Callback
from pytorch_tabnet.metrics import Metric
from pytorch_tabnet.tab_model import TabNetClassifier
from sklearn.metrics import average_precision_score

from fraud_training.config import TrainingConfig
from fraud_training.prepare import PreparedData
from fraudlib.layout import tabnet_member_filename

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


class EnsembleNetwork(torch.nn.Module):
    """Several TabNet networks as one module with TabNet's ``forward``/``forward_masks``.

    ``forward`` returns log-probabilities of the members' mean probability, so that the
    softmax a caller applies gives exactly that mean; ``forward_masks`` returns the mean of
    the members' explanations, each normalised per row first (members' raw masks have
    different scales).
    """

    def __init__(self, networks: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(networks)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.stack([torch.softmax(member(features)[0], dim=1) for member in self.members]).mean(0)
        return torch.log(probabilities), torch.zeros((), dtype=features.dtype)

    def forward_masks(self, features: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        shares = []
        for member in self.members:
            explain, _ = member.forward_masks(features)
            total = explain.sum(dim=1, keepdim=True)
            shares.append(explain / torch.clamp(total, min=torch.finfo(explain.dtype).tiny))
        return torch.stack(shares).mean(0), {}


@dataclass(frozen=True)
class TabNetEnsemble:
    """The trained TabNet members (one by default)."""

    members: tuple[TabNetClassifier, ...]

    @property
    def network(self) -> torch.nn.Module:
        """What the served graph is exported from: the one network, or their mean."""
        if len(self.members) == 1:
            return self.members[0].network
        return EnsembleNetwork([member.network for member in self.members])

    def predict_fraud_proba(self, features: np.ndarray) -> np.ndarray:
        """Mean probability of fraud by TabNet's own ``predict_proba`` (float32, torch)."""
        return np.mean([member.predict_proba(features)[:, 1] for member in self.members], axis=0, dtype=np.float64)

    @property
    def feature_importances(self) -> np.ndarray:
        return np.mean([member.feature_importances_ for member in self.members], axis=0)

    def epoch_history(self) -> list[dict[str, float]]:
        """Per-epoch loss and validation AUPRC, for MLflow: the first member's under the
        plain names, the others' under ``member<k>_``."""
        merged: dict[int, dict[str, float]] = {}
        for index, member in enumerate(self.members):
            prefix = "" if index == 0 else f"member{index}_"
            for epoch, values in enumerate(epoch_history(member)):
                merged.setdefault(epoch, {}).update({f"{prefix}{name}": value for name, value in values.items()})
        return [merged[epoch] for epoch in sorted(merged)]

    @property
    def epochs(self) -> list[int]:
        return [len(epoch_history(member)) for member in self.members]

    def save(self, directory: Path) -> dict[str, bytes]:
        """TabNet's own zip of each member, by bundle file name."""
        files = {}
        for index, member in enumerate(self.members):
            name = tabnet_member_filename(index)
            saved = Path(member.save_model(str(directory / name.removesuffix(".zip"))))
            files[name] = saved.read_bytes()
        return files


def train_tabnet(prepared: PreparedData, config: TrainingConfig) -> TabNetEnsemble:
    """Fit ``config.ensemble_size`` TabNetClassifiers, each keeping the weights of its best
    validation-AUPRC epoch."""
    if config.ensemble_size < 1:
        raise TrainingDataError(f"ensemble_size={config.ensemble_size} must be at least 1")
    members = []
    for index in range(config.ensemble_size):
        train_x, train_y = prepared.member_training_set(index)
        if config.ensemble_size > 1:
            log.info("ensemble member %d/%d on %s rows", index + 1, config.ensemble_size, f"{len(train_y):,}")
        members.append(
            _train_member(train_x, train_y, prepared.val_x, prepared.val_y, config=config, seed=config.seed + index)
        )
    return TabNetEnsemble(tuple(members))


def _train_member(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, *, config: TrainingConfig, seed: int
) -> TabNetClassifier:
    check_batches(train_x.shape[0], config)
    torch.manual_seed(seed)
    model = TabNetClassifier(
        n_d=config.n_d,
        n_a=config.n_a,
        n_steps=config.n_steps,
        gamma=config.gamma,
        lambda_sparse=config.lambda_sparse,
        mask_type=config.mask_type,
        optimizer_fn=torch.optim.Adam,
        optimizer_params={"lr": config.learning_rate, "weight_decay": config.weight_decay},
        seed=seed,
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


def epoch_history(model: TabNetClassifier) -> list[dict[str, float]]:
    """One member's per-epoch loss and validation AUPRC."""
    history = model.history.history
    losses = history.get("loss", [])
    auprc = history.get(f"{VALIDATION_NAME}_auprc", [])
    return [{"loss": float(loss), "val_auprc": float(metric)} for loss, metric in zip(losses, auprc, strict=False)]
