"""The training job's settings: defaults, presets, and the three ways to override them.

Precedence, lowest first: defaults < preset < SageMaker hyperparameters
(``/opt/ml/input/config/hyperparameters.json``) < environment (``TRAIN_<NAME>``) < CLI flags.
Every field can be set each way, under the same name (``max_epochs``, ``--max-epochs``,
``TRAIN_MAX_EPOCHS``, hyperparameter ``max-epochs`` or ``max_epochs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from fraudlib.preprocessing import TimeEncoding

SAGEMAKER_HYPERPARAMETERS = Path("/opt/ml/input/config/hyperparameters.json")
SAGEMAKER_INPUT_DIR = Path("/opt/ml/input/data")
SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")


class SplitMode(StrEnum):
    STRATIFIED = "stratified"
    TIME = "time"


class ThresholdPolicy(StrEnum):
    MAX_F1 = "max_f1"
    TARGET_RECALL = "target_recall"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class TrainingConfig:
    """Every knob of a training run.

    The defaults are the project's recipe, chosen on the real data with
    ``bench/train_quality.py`` (README, "Model quality"): the seed's network, trained as an
    ensemble of members that each see every fraud and their own 1:50 draw of the legitimate
    transactions. The seed project's recipe is the ``seed`` preset.
    """

    # data
    data: str = ""
    """First training: a CSV path or s3:// URI; stored as the base dataset. Empty: retrain
    from the base dataset and the labelled batches."""
    split: SplitMode = SplitMode.STRATIFIED
    undersample_ratio: float | None = 0.02
    """Minority/majority ratio after random undersampling of the training part (1.0 =
    balanced, the seed's; 0.02 = 1 fraud to 50 legitimate); None = keep every row."""
    time_encoding: TimeEncoding = TimeEncoding.DROP
    seed: int = 42
    # TabNet (the seed's network)
    n_d: int = 24
    n_a: int = 24
    n_steps: int = 3
    gamma: float = 1.3
    lambda_sparse: float = 1e-3
    mask_type: str = "sparsemax"
    learning_rate: float = 0.02
    weight_decay: float = 1e-5
    max_epochs: int = 200
    patience: int = 20
    batch_size: int = 1024
    virtual_batch_size: int = 128
    drop_last: bool = True
    ensemble_size: int = 5
    """TabNet members trained (each its own seed and undersampling draw); the served graph
    averages their probabilities, or, with ``distill``, one network learns their average."""
    distill: bool = True
    """With more than one member: serve one TabNet (same architecture) trained to reproduce
    the members' mean log-odds of fraud (knowledge distillation), not the members
    themselves: one network's latency at the ensemble's quality."""
    distill_undersample_ratio: float | None = 0.005
    """Rows the distilled network learns from: the training part undersampled to this
    minority/majority ratio (1 fraud to 200; None = every training row). The teacher labels
    them all, so the student sees four times the legitimate rows of any member."""
    distill_max_epochs: int = 120
    distill_patience: int = 20
    pretrain_max_epochs: int = 0
    """TabNet's self-supervised pretraining before the members (0 = none): at most this many
    epochs on every training row, labels unused; the members and the distilled network
    start from its encoder."""
    pretrain_patience: int = 5
    calibrate: bool = True
    """Platt-scale the served probabilities on the validation part (inside the served graph),
    so that ``fraud_probability`` matches the data's fraud rate despite undersampling. A
    monotone map: rankings and decisions at the threshold are unchanged."""
    pretraining_ratio: float = 0.5
    """Share of each row's features hidden for the pretrainer to rebuild (TabNet's name)."""
    # evaluation and promotion
    threshold_policy: ThresholdPolicy = ThresholdPolicy.MAX_F1
    target_recall: float = 0.8
    bootstrap_rounds: int = 200
    gate_tolerance: float = 0.01
    """A new model is promoted when its test AUPRC >= the champion's on the same rows minus this."""
    min_auprc: float = 0.3
    min_roc_auc: float = 0.8
    """Floors a first model must pass to be promoted."""
    baseline: bool = True
    registered_model_name: str = "fraud-tabnet"
    # the run
    job_id: str = ""
    trigger_uri: str = ""
    drift_report_uri: str = ""
    output_dir: str = ""
    """Where the bundle is also written locally (SageMaker: /opt/ml/model)."""

    def with_changes(self, changes: Mapping[str, Any]) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    def as_params(self) -> dict[str, Any]:
        """Flat, loggable view (MLflow params)."""
        params: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            params[spec.name] = value.value if isinstance(value, StrEnum) else value
        return params


PRESETS: dict[str, dict[str, Any]] = {
    # The seed project's recipe: one TabNet on balanced random undersampling, patience 50.
    "seed": {
        "undersample_ratio": 1.0,
        "ensemble_size": 1,
        "patience": 50,
        "batch_size": 256,
        "virtual_batch_size": 128,
        "calibrate": False,
    },
    # Small and fast, for tests on synthetic data: one network, a few epochs.
    "smoke": {
        "ensemble_size": 1,
        "max_epochs": 5,
        "patience": 3,
        "batch_size": 256,
        "virtual_batch_size": 64,
        "bootstrap_rounds": 20,
    },
}


def _parse_value(name: str, raw: Any) -> Any:
    spec = TrainingConfig.__dataclass_fields__[name]
    kind = spec.type
    if raw is None:
        return None
    text = str(raw).strip()
    try:
        if name in ("undersample_ratio", "distill_undersample_ratio"):
            return None if text.lower() in ("", "none", "null") else float(text)
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError(text)
        if kind == "SplitMode":
            return SplitMode(text)
        if kind == "TimeEncoding":
            return TimeEncoding(text)
        if kind == "ThresholdPolicy":
            return ThresholdPolicy(text)
        return text
    except ValueError as exc:
        raise ConfigError(f"setting {name}={text!r} is not a valid {kind}") from exc


def parse_settings(raw: Mapping[str, Any], source: str, shown_prefix: str = "") -> dict[str, Any]:
    """Settings by any of their spellings (``max-epochs``, ``MAX_EPOCHS``) as typed values;
    ConfigError names an unknown one or a bad value."""
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_").lower()
        if name == "preset":
            continue
        if name not in TrainingConfig.__dataclass_fields__:
            raise ConfigError(f"unknown setting {shown_prefix}{key} in {source}")
        changes[name] = _parse_value(name, value)
    return changes


def _shown_default(value: Any) -> str:
    if isinstance(value, StrEnum):
        return value.value
    return "none" if value is None else repr(value) if value == "" else str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train, evaluate, register and (maybe) promote a TabNet model.",
        epilog="Each setting can also come from TRAIN_<NAME> (TRAIN_MAX_EPOCHS) or SageMaker's "
        "hyperparameters.json (max-epochs); precedence: defaults < preset < hyperparameters < "
        "environment < flags.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe to start from")
    defaults = TrainingConfig()
    types = typing.get_type_hints(TrainingConfig)
    for spec in fields(TrainingConfig):
        kind = types[spec.name]
        choices = [m.value for m in kind] if isinstance(kind, type) and issubclass(kind, StrEnum) else None
        parser.add_argument(
            f"--{spec.name.replace('_', '-')}",
            dest=spec.name,
            default=None,
            metavar=("{" + ",".join(choices) + "}") if choices else spec.name.upper(),
            help=f"default {_shown_default(getattr(defaults, spec.name))}",
        )
    return parser


def load_config(
    argv: list[str] | None,
    env: Mapping[str, str],
    hyperparameters_path: Path = SAGEMAKER_HYPERPARAMETERS,
) -> TrainingConfig:
    """Merge defaults, preset, SageMaker hyperparameters, environment and CLI flags."""
    args = build_parser().parse_args(argv)
    hyperparameters: dict[str, Any] = {}
    if hyperparameters_path.exists():
        hyperparameters = json.loads(hyperparameters_path.read_text())
    from_env = {key[len("TRAIN_") :]: value for key, value in env.items() if key.startswith("TRAIN_")}
    from_cli = {name: value for name, value in vars(args).items() if value is not None and name != "preset"}
    preset = args.preset or hyperparameters.get("preset") or from_env.pop("PRESET", None)
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(sorted(PRESETS))}")
    config = TrainingConfig()
    if preset:
        config = config.with_changes(PRESETS[preset])
    for source, raw, prefix in (
        ("hyperparameters.json", hyperparameters, ""),
        ("the environment", from_env, "TRAIN_"),
        ("the command line", from_cli, "--"),
    ):
        config = config.with_changes(parse_settings(raw, source, prefix))
    if "job_id" not in from_cli and not config.job_id and env.get("TRAINING_JOB_ID"):
        config = config.with_changes({"job_id": env["TRAINING_JOB_ID"]})
    return config
