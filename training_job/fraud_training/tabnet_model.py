"""TabNet training: the seed's network, early stopping on validation AUPRC, visible progress,
an ensemble of such networks, and one network distilled from the ensemble.

An ensemble's members differ in their seed and, when the training part is undersampled, in
their draw of the majority class; their mean probability is better than any of them.
Measured on the real data (one stratified split): three members scored ROC-AUC 0.974 / AUPRC
0.799 where the members alone scored 0.952-0.965 / 0.745-0.796 (``bench/train_quality.py``
has the protocol).

Serving five networks costs five networks' time (a 1,000-row batch: 41 ms against 15 for
one). So by default the ensemble is a teacher: one more network of the same architecture
(the student) learns the members' mean log-odds of fraud, by squared error, on every fraud
of the training part and a 1:200 draw of its legitimate rows, and the student is served.
On one real split (seed 1, 5 members with test AUPRC 0.68-0.80, their mean 0.806 / ROC-AUC
0.980) the student scored 0.809 / 0.981 in 2 minutes; on every training row, 0.795 / 0.981
in 5 minutes. Soft-label cross-entropy instead of log-odds gave 0.725 (every row) and 0.771
(1:200): the log-odds keep the ranking among legitimate transactions, which cross-entropy on
near-zero targets hardly sees.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_tabnet.callbacks import Callback
from pytorch_tabnet.metrics import Metric
from pytorch_tabnet.pretraining import TabNetPretrainer
from pytorch_tabnet.tab_model import TabNetClassifier, TabNetRegressor
from scipy.special import expit
from sklearn.metrics import average_precision_score

from fraud_training.calibration import CalibrationError, PlattScaling, fit_platt
from fraud_training.config import TrainingConfig
from fraud_training.prepare import PreparedData
from fraud_training.split import undersample
from fraudlib.layout import TABNET_STUDENT_FILENAME, tabnet_member_filename

log = logging.getLogger(__name__)
VALIDATION_NAME = "val"
MEMBER_METRIC = "auprc"
STUDENT_METRIC = "auprc_of_log_odds"
PRETRAINER_METRIC = "unsup_loss_numpy"
"""pytorch-tabnet's name for the pretrainer's validation reconstruction loss (lower is better)."""
LOG_ODDS_LIMIT = 15.0
"""The teacher's log-odds are clipped to +-15 (probabilities 3e-7 .. 1 - 3e-7): its float32
probabilities round to exactly 0 or 1 beyond that, which would be an infinite target."""


class TrainingDataError(ValueError):
    """Settings and data that would make TabNet train on nothing."""


class AUPRC(Metric):
    """Area under the precision-recall curve (average precision), for early stopping."""

    def __init__(self) -> None:
        self._name = "auprc"
        self._maximize = True

    def __call__(self, y_true: np.ndarray, y_score: np.ndarray) -> float:
        return float(average_precision_score(y_true, y_score[:, 1]))


class LogOddsAUPRC(Metric):
    """AUPRC of the distilled network's output (log-odds) against the 0/1 labels, for its
    early stopping. (pytorch-tabnet finds metrics by name: the name must differ from
    :class:`AUPRC`'s.)"""

    def __init__(self) -> None:
        self._name = STUDENT_METRIC
        self._maximize = True

    def __call__(self, y_true: np.ndarray, y_score: np.ndarray) -> float:
        return float(average_precision_score(y_true[:, 0] > 0.5, y_score[:, 0]))


class ProgressLog(Callback):
    """One log line per epoch: loss, validation AUPRC, best so far, elapsed and ETA."""

    def __init__(self, max_epochs: int, metric: str = MEMBER_METRIC, *, maximize: bool = True) -> None:
        super().__init__()
        self.max_epochs = max_epochs
        self.metric = metric
        self.shown_name = "val_auprc" if maximize else "val_reconstruction_loss"
        self.best_of = max if maximize else min
        self.started = 0.0
        self.best = -np.inf if maximize else np.inf

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        metric = float(logs.get(f"{VALIDATION_NAME}_{self.metric}", float("nan")))
        self.best = self.best_of(self.best, metric)
        elapsed = time.monotonic() - self.started
        eta = elapsed / (epoch + 1) * (self.max_epochs - epoch - 1)
        log.info(
            "epoch %d/%d  loss %.5f  %s %.4f  best %.4f  elapsed %.0fs  eta <= %.0fs",
            epoch + 1,
            self.max_epochs,
            float(logs.get("loss", float("nan"))),
            self.shown_name,
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


class DistilledNetwork(torch.nn.Module):
    """The distilled network (one output: log-odds of fraud) behind TabNet's classifier
    interface: ``forward`` returns the logits (0, z), whose softmax is exactly
    (1 - sigmoid(z), sigmoid(z)); ``forward_masks`` is the network's own."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_odds, sparsity_loss = self.network(features)
        return torch.cat([torch.zeros_like(log_odds), log_odds], dim=1), sparsity_loss

    def forward_masks(self, features: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.network.forward_masks(features)


class CalibratedNetwork(torch.nn.Module):
    """A network with TabNet's two-class interface whose log-odds of fraud, ``z = l1 - l0``
    (softmax of (l0, l1) is (1 - sigmoid(z), sigmoid(z))), pass through Platt scaling:
    ``forward`` returns (0, slope * z + intercept). ``forward_masks`` is the network's own:
    calibration changes no explanation."""

    def __init__(self, network: torch.nn.Module, calibration: PlattScaling) -> None:
        super().__init__()
        self.network = network
        self.slope = calibration.slope
        self.intercept = calibration.intercept

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, sparsity_loss = self.network(features)
        log_odds = logits[:, 1:2] - logits[:, 0:1]
        return torch.cat([torch.zeros_like(log_odds), self.slope * log_odds + self.intercept], dim=1), sparsity_loss

    def forward_masks(self, features: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.network.forward_masks(features)


def served_network(network: torch.nn.Module, calibration_record: Mapping[str, Any] | None) -> torch.nn.Module:
    """A saved network (``tabnet.zip``, ``tabnet-student.zip`` wrapped in
    :class:`DistilledNetwork`) as its bundle serves it: behind the Platt scaling that the
    manifest's ``calibration`` records, if any. ``model.onnx`` is this, exported."""
    calibration = PlattScaling.from_record(calibration_record)
    return network if calibration is None else CalibratedNetwork(network, calibration)


@dataclass(frozen=True)
class PretrainingSummary:
    """The self-supervised pretraining every network started from (not saved in the bundle:
    serving needs only the fine-tuned networks)."""

    rows: int
    epochs: int
    best_validation_loss: float
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {
            "rows": self.rows,
            "epochs": self.epochs,
            "best_validation_loss": self.best_validation_loss,
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class TabNetEnsemble:
    """The trained TabNet members (one, for the ``seed`` and ``smoke`` presets) and, when
    they were distilled, the student network that is served in their place."""

    members: tuple[TabNetClassifier, ...]
    student: TabNetRegressor | None = None
    student_rows: int = 0
    pretraining: PretrainingSummary | None = None
    """What self-supervised pretraining did, when the networks started from it."""
    pretrainer: TabNetPretrainer | None = field(default=None, repr=False)
    """The pretrained encoder itself, in memory only, for :func:`distil` to start from."""
    calibration: PlattScaling | None = None
    """Platt scaling of the served probabilities (:func:`calibrate`), inside the served graph."""
    calibration_skipped: str = ""
    """Why calibration was asked for and not done (too few validation frauds), or empty."""

    @property
    def network(self) -> torch.nn.Module:
        """What the served graph is exported from: the student, the one network, or the
        members' mean; behind the calibration when there is one."""
        network = self.uncalibrated_network
        return network if self.calibration is None else CalibratedNetwork(network, self.calibration)

    @property
    def uncalibrated_network(self) -> torch.nn.Module:
        if self.student is not None:
            return DistilledNetwork(self.student.network)
        if len(self.members) == 1:
            return self.members[0].network
        return EnsembleNetwork([member.network for member in self.members])

    def raw_log_odds(self, features: np.ndarray) -> np.ndarray:
        """The served model's log-odds of fraud before calibration, by the torch network in
        float32 as trained (what :class:`CalibratedNetwork` scales)."""
        network = self.uncalibrated_network.eval()
        with torch.no_grad():
            logits, _ = network(torch.from_numpy(np.asarray(features, dtype=np.float32)))
        return (logits[:, 1] - logits[:, 0]).numpy().astype(np.float64)

    def predict_fraud_proba(self, features: np.ndarray) -> np.ndarray:
        """Probability of fraud of the served model by torch (float32): the student's, or
        the members' mean; calibrated when the model is."""
        if self.calibration is not None:
            return self.calibration.probabilities(self.raw_log_odds(features))
        if self.student is not None:
            return expit(self.student.predict(features)[:, 0].astype(np.float64))
        return self.teacher_fraud_proba(features)

    def teacher_fraud_proba(self, features: np.ndarray) -> np.ndarray:
        """The members' mean probability of fraud (float32 torch, averaged in float64)."""
        return np.mean([member.predict_proba(features)[:, 1] for member in self.members], axis=0, dtype=np.float64)

    @property
    def feature_importances(self) -> np.ndarray:
        """The served network's (TabNet's attention-based importances)."""
        if self.student is not None:
            return np.asarray(self.student.feature_importances_)
        return np.mean([member.feature_importances_ for member in self.members], axis=0)

    def epoch_history(self) -> list[dict[str, float]]:
        """Per-epoch loss and validation AUPRC, for MLflow: the first member's under the
        plain names, the others' under ``member<k>_``, the student's under ``student_``."""
        merged: dict[int, dict[str, float]] = {}
        histories = [
            (f"member{index}_" if index else "", epoch_history(member)) for index, member in enumerate(self.members)
        ]
        if self.student is not None:
            histories.append(("student_", epoch_history(self.student, STUDENT_METRIC)))
        for prefix, history in histories:
            for epoch, values in enumerate(history):
                merged.setdefault(epoch, {}).update({f"{prefix}{name}": value for name, value in values.items()})
        return [merged[epoch] for epoch in sorted(merged)]

    @property
    def epochs(self) -> list[int]:
        return [len(epoch_history(member)) for member in self.members]

    @property
    def student_epochs(self) -> int:
        return 0 if self.student is None else len(epoch_history(self.student, STUDENT_METRIC))

    def save(self, directory: Path) -> dict[str, bytes]:
        """TabNet's own zip of each member (and of the student), by bundle file name."""
        saved = [(tabnet_member_filename(index), member) for index, member in enumerate(self.members)]
        if self.student is not None:
            saved.append((TABNET_STUDENT_FILENAME, self.student))
        files = {}
        for name, model in saved:
            path = Path(model.save_model(str(directory / name.removesuffix(".zip"))))
            files[name] = path.read_bytes()
        return files


def train_tabnet(prepared: PreparedData, config: TrainingConfig) -> TabNetEnsemble:
    """Fit ``config.ensemble_size`` TabNetClassifiers, each keeping the weights of its best
    validation-AUPRC epoch; with more than one and ``config.distill``, distil them into one
    network (:func:`distil`)."""
    if config.ensemble_size < 1:
        raise TrainingDataError(f"ensemble_size={config.ensemble_size} must be at least 1")
    pretrainer, pretraining = pretrain(prepared, config)
    members = []
    for index in range(config.ensemble_size):
        train_x, train_y = prepared.member_training_set(index)
        if config.ensemble_size > 1:
            log.info("ensemble member %d/%d on %s rows", index + 1, config.ensemble_size, f"{len(train_y):,}")
        members.append(
            _train_member(
                train_x,
                train_y,
                prepared.val_x,
                prepared.val_y,
                config=config,
                seed=config.seed + index,
                from_unsupervised=pretrainer,
            )
        )
    ensemble = TabNetEnsemble(tuple(members), pretraining=pretraining, pretrainer=pretrainer)
    if config.distill and len(members) > 1:
        student, rows = distil(ensemble, prepared, config)
        ensemble = dataclasses.replace(ensemble, student=student, student_rows=rows)
    return calibrate(ensemble, prepared) if config.calibrate else ensemble


def calibrate(model: TabNetEnsemble, prepared: PreparedData) -> TabNetEnsemble:
    """The model with Platt scaling fitted on the validation part to its served network's
    raw log-odds (any earlier calibration replaced). When the validation part cannot
    calibrate (too few frauds), the model is returned uncalibrated, with the reason."""
    uncalibrated = dataclasses.replace(model, calibration=None, calibration_skipped="")
    raw = np.clip(uncalibrated.raw_log_odds(prepared.val_x), -LOG_ODDS_LIMIT, LOG_ODDS_LIMIT)
    try:
        calibration = fit_platt(raw, prepared.val_y)
    except CalibrationError as exc:
        log.warning("serving uncalibrated probabilities: %s", exc)
        return dataclasses.replace(uncalibrated, calibration_skipped=str(exc))
    log.info(
        "calibrated on %s validation rows: slope %.3f, intercept %.3f, log loss %.5f -> %.5f",
        f"{calibration.rows:,}",
        calibration.slope,
        calibration.intercept,
        calibration.log_loss_before,
        calibration.log_loss_after,
    )
    return dataclasses.replace(uncalibrated, calibration=calibration)


def pretrain(
    prepared: PreparedData, config: TrainingConfig
) -> tuple[TabNetPretrainer | None, PretrainingSummary | None]:
    """TabNet's self-supervised pretraining (``config.pretrain_max_epochs`` > 0): the encoder
    learns to rebuild a random ``config.pretraining_ratio`` of each row's features from the
    others, on every row of the training part with its labels unused (so the legitimate
    rows that undersampling leaves out of every member still shape the encoder), early-stopped
    on the validation rows' reconstruction loss. Every member, and the distilled network,
    then starts from its weights. (None, None) when pretraining is off."""
    if config.pretrain_max_epochs <= 0:
        return None, None
    if not 0.0 < config.pretraining_ratio < 1.0:
        raise TrainingDataError(
            f"pretraining_ratio={config.pretraining_ratio} must lie between 0 and 1 (the share of features hidden)"
        )
    rows = prepared.every_train_x
    check_batches(rows.shape[0], config)
    log.info("self-supervised pretraining on %s rows (labels unused)", f"{rows.shape[0]:,}")
    started = time.monotonic()
    torch.manual_seed(config.seed)
    pretrainer = TabNetPretrainer(**_network_parameters(config, config.seed))
    pretrainer.fit(
        rows,
        eval_set=[prepared.val_x],
        eval_name=[VALIDATION_NAME],
        pretraining_ratio=config.pretraining_ratio,
        max_epochs=config.pretrain_max_epochs,
        patience=config.pretrain_patience,
        batch_size=config.batch_size,
        virtual_batch_size=config.virtual_batch_size,
        drop_last=config.drop_last,
        callbacks=[ProgressLog(config.pretrain_max_epochs, PRETRAINER_METRIC, maximize=False)],
    )
    losses = pretrainer.history.history.get(f"{VALIDATION_NAME}_{PRETRAINER_METRIC}", [])
    summary = PretrainingSummary(
        rows=int(rows.shape[0]),
        epochs=len(losses),
        best_validation_loss=float(min(losses)) if losses else float("nan"),
        seconds=time.monotonic() - started,
    )
    return pretrainer, summary


def log_odds(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore"):
        odds = np.log(probabilities) - np.log1p(-probabilities)
    return np.clip(odds, -LOG_ODDS_LIMIT, LOG_ODDS_LIMIT)


def distil(teacher: TabNetEnsemble, prepared: PreparedData, config: TrainingConfig) -> tuple[TabNetRegressor, int]:
    """One TabNet of the members' architecture trained, by squared error, to output the
    members' mean log-odds of fraud on the training part (every row, or a draw at
    ``config.distill_undersample_ratio``); early-stopped on validation AUPRC against the
    true labels; started from the members' pretrained encoder when they had one. Returns the network
    and how many rows it learned from."""
    seed = config.seed + len(teacher.members)  # the next seed after the members'
    rows_x, rows_y = undersample(prepared.every_train_x, prepared.every_train_y, config.distill_undersample_ratio, seed)
    check_batches(rows_x.shape[0], config)
    target = log_odds(teacher.teacher_fraud_proba(rows_x))
    log.info("distilling %d members into one network on %s rows", len(teacher.members), f"{len(rows_y):,}")
    torch.manual_seed(seed)
    student = _fit(
        TabNetRegressor(**_network_parameters(config, seed)),
        (rows_x, target[:, None].astype(np.float32)),
        (prepared.val_x, prepared.val_y[:, None].astype(np.float32)),
        LogOddsAUPRC,
        max_epochs=config.distill_max_epochs,
        patience=config.distill_patience,
        config=config,
        from_unsupervised=teacher.pretrainer,
    )
    return student, int(rows_x.shape[0])


def _fit(
    model: Any,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    metric: type[Metric],
    *,
    max_epochs: int,
    patience: int,
    config: TrainingConfig,
    from_unsupervised: TabNetPretrainer | None = None,
) -> Any:
    """``model.fit`` early-stopped on ``metric`` over the validation part, with progress;
    from the pretrained encoder's weights when ``from_unsupervised`` is given."""
    model.fit(
        *train,
        eval_set=[validation],
        eval_name=[VALIDATION_NAME],
        eval_metric=[metric],
        max_epochs=max_epochs,
        patience=patience,
        batch_size=config.batch_size,
        virtual_batch_size=config.virtual_batch_size,
        drop_last=config.drop_last,
        callbacks=[ProgressLog(max_epochs, metric()._name)],
        from_unsupervised=from_unsupervised,
    )
    return model


def _network_parameters(config: TrainingConfig, seed: int) -> dict[str, Any]:
    return {
        "n_d": config.n_d,
        "n_a": config.n_a,
        "n_steps": config.n_steps,
        "gamma": config.gamma,
        "lambda_sparse": config.lambda_sparse,
        "mask_type": config.mask_type,
        "optimizer_fn": torch.optim.Adam,
        "optimizer_params": {"lr": config.learning_rate, "weight_decay": config.weight_decay},
        "seed": seed,
        "verbose": 0,
        "device_name": "auto",
    }


def _train_member(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    config: TrainingConfig,
    seed: int,
    from_unsupervised: TabNetPretrainer | None,
) -> TabNetClassifier:
    check_batches(train_x.shape[0], config)
    torch.manual_seed(seed)
    return _fit(
        TabNetClassifier(**_network_parameters(config, seed)),
        (train_x, train_y),
        (val_x, val_y),
        AUPRC,
        max_epochs=config.max_epochs,
        patience=config.patience,
        config=config,
        from_unsupervised=from_unsupervised,
    )


def epoch_history(model: TabNetClassifier | TabNetRegressor, metric: str = MEMBER_METRIC) -> list[dict[str, float]]:
    """One network's per-epoch loss and validation AUPRC."""
    history = model.history.history
    losses = history.get("loss", [])
    auprc = history.get(f"{VALIDATION_NAME}_{metric}", [])
    return [{"loss": float(loss), "val_auprc": float(metric)} for loss, metric in zip(losses, auprc, strict=False)]
