"""Typed settings, parsed once from the environment at cold start.

A missing or malformed variable fails at start with a message that names it, instead of
failing on the first event with a KeyError.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    # Imported where used: the scoring image reads its settings here and ships neither
    # pandas (batch) nor SciPy (drift).
    from fraudlib.batch import BatchLimits
    from fraudlib.drift import DriftConfig

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


class SettingsError(ValueError):
    """An environment variable is missing or has a value that cannot be used."""


class TrainingBackend(StrEnum):
    SAGEMAKER = "sagemaker"
    LOCAL = "local"
    DOCKER = "docker"


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"environment variable {name} is required and is not set")
    return value


def _parsed(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], kind: str) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(f"environment variable {name}={raw!r} is not {kind}") from exc


def _enum(env: Mapping[str, str], name: str, default: E) -> E:
    enum_type = type(default)
    choices = ", ".join(member.value for member in enum_type)
    return _parsed(env, name, default, enum_type, f"one of: {choices}")


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


@dataclass(frozen=True)
class SageMakerSettings:
    image_uri: str
    role_arn: str
    instance_type: str
    max_runtime_s: int
    use_spot: bool
    volume_size_gb: int


@dataclass(frozen=True)
class LocalTrainingSettings:
    command: tuple[str, ...]
    log_dir: str


@dataclass(frozen=True)
class DockerTrainingSettings:
    """The training image run through a Docker API (a local engine, podman's service)."""

    image: str
    #: "host" lets the job reach an endpoint on 127.0.0.1 (the embedded stack's moto).
    network: str
    #: "HOST_PATH:CONTAINER_PATH" bind mounts, such as the state folder MLflow writes to.
    mounts: tuple[str, ...]
    log_dir: str


@dataclass(frozen=True)
class DriftSettings:
    """Everything the drift function needs, read from its environment."""

    incoming_bucket: str
    artifacts_bucket: str
    lock_table: str
    limits: BatchLimits
    drift: DriftConfig
    backend: TrainingBackend
    lock_ttl_s: int
    mlflow_tracking_uri: str
    sagemaker: SageMakerSettings | None
    local: LocalTrainingSettings | None
    docker: DockerTrainingSettings | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DriftSettings:
        """Parse and check the environment.

        Raises
        ------
        SettingsError
            Naming the first variable that is missing or wrong.
        """
        from fraudlib.batch import BatchLimits
        from fraudlib.drift import DriftConfig

        default_limits = BatchLimits()
        limits = BatchLimits(
            max_bytes=_parsed(env, "MAX_BATCH_BYTES", default_limits.max_bytes, int, "an integer"),
            max_rows=_parsed(env, "MAX_BATCH_ROWS", default_limits.max_rows, int, "an integer"),
        )
        default_drift = DriftConfig()
        try:
            drift = DriftConfig(
                p_value_threshold=_parsed(env, "DRIFT_P_VALUE", default_drift.p_value_threshold, float, "a number"),
                correction=_enum(env, "DRIFT_CORRECTION", default_drift.correction),
                min_statistic=_parsed(env, "DRIFT_MIN_STATISTIC", default_drift.min_statistic, float, "a number"),
                min_drifted_features=_parsed(
                    env, "DRIFT_MIN_FEATURES", default_drift.min_drifted_features, int, "an integer"
                ),
                p_value_method=_enum(env, "DRIFT_P_VALUE_METHOD", default_drift.p_value_method),
                time_mode=_enum(env, "DRIFT_TIME_MODE", default_drift.time_mode),
            )
        except ValueError as exc:
            if isinstance(exc, SettingsError):
                raise
            raise SettingsError(f"drift settings (DRIFT_*) are inconsistent: {exc}") from exc
        backend = _enum(env, "TRAINING_BACKEND", TrainingBackend.SAGEMAKER)
        max_runtime_s = _parsed(env, "TRAINING_MAX_RUNTIME_S", 3600, int, "an integer")
        sagemaker = None
        local = None
        docker = None
        if backend is TrainingBackend.SAGEMAKER:
            sagemaker = SageMakerSettings(
                image_uri=_required(env, "TRAINING_IMAGE_URI"),
                role_arn=_required(env, "TRAINING_ROLE_ARN"),
                instance_type=env.get("TRAINING_INSTANCE_TYPE", "").strip() or "ml.m5.xlarge",
                max_runtime_s=max_runtime_s,
                use_spot=_parsed(env, "TRAINING_USE_SPOT", False, _bool, "true or false"),
                volume_size_gb=_parsed(env, "TRAINING_VOLUME_GB", 30, int, "an integer"),
            )
        elif backend is TrainingBackend.DOCKER:
            docker = DockerTrainingSettings(
                image=_required(env, "TRAINING_IMAGE"),
                network=env.get("TRAINING_DOCKER_NETWORK", "").strip() or "host",
                mounts=tuple(shlex.split(env.get("TRAINING_DOCKER_MOUNTS", ""))),
                log_dir=env.get("LOCAL_TRAINING_LOG_DIR", "").strip() or ".stack/jobs",
            )
            for mount in docker.mounts:
                if mount.count(":") not in (1, 2) or not mount.startswith("/"):
                    raise SettingsError(f"TRAINING_DOCKER_MOUNTS entry {mount!r} is not HOST_PATH:CONTAINER_PATH[:ro]")
        else:
            default_command = f"{shlex.quote(sys.executable)} training_job/entrypoint.py"
            local = LocalTrainingSettings(
                command=tuple(shlex.split(env.get("LOCAL_TRAINING_COMMAND", "") or default_command)),
                log_dir=env.get("LOCAL_TRAINING_LOG_DIR", "").strip() or ".stack/jobs",
            )
        return cls(
            incoming_bucket=_required(env, "INCOMING_BUCKET"),
            artifacts_bucket=_required(env, "ARTIFACTS_BUCKET"),
            lock_table=_required(env, "LOCK_TABLE"),
            limits=limits,
            drift=drift,
            backend=backend,
            # A crashed job must not block retraining forever: the lock expires after the
            # job's maximum runtime plus a margin for start-up and upload.
            lock_ttl_s=_parsed(env, "TRAINING_LOCK_TTL_S", max_runtime_s + 900, int, "an integer"),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", "").strip(),
            sagemaker=sagemaker,
            local=local,
            docker=docker,
        )


@dataclass(frozen=True)
class ScoringSettings:
    """Everything the scoring function needs, read from its environment."""

    artifacts_bucket: str
    model_check_interval_s: float
    max_batch: int
    max_body_bytes: int
    explain_top: int
    inference_threads: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ScoringSettings:
        """Parse and check the environment.

        Raises
        ------
        SettingsError
            Naming the first variable that is missing or wrong.
        """
        settings = cls(
            artifacts_bucket=_required(env, "ARTIFACTS_BUCKET"),
            model_check_interval_s=_parsed(env, "MODEL_CHECK_INTERVAL_S", 30.0, float, "a number of seconds"),
            max_batch=_parsed(env, "MAX_PREDICT_BATCH", 1000, int, "an integer"),
            # API Gateway itself stops at 10 MB; a full batch of 1,000 is about 0.8 MB.
            max_body_bytes=_parsed(env, "MAX_PREDICT_BODY_BYTES", 2 * 1024 * 1024, int, "an integer"),
            explain_top=_parsed(env, "EXPLAIN_TOP_FEATURES", 3, int, "an integer"),
            inference_threads=_parsed(env, "INFERENCE_THREADS", 1, int, "an integer"),
        )
        for name, value in (
            ("MODEL_CHECK_INTERVAL_S", settings.model_check_interval_s),
            ("MAX_PREDICT_BATCH", settings.max_batch),
            ("MAX_PREDICT_BODY_BYTES", settings.max_body_bytes),
            ("EXPLAIN_TOP_FEATURES", settings.explain_top),
            ("INFERENCE_THREADS", settings.inference_threads),
        ):
            if value < (0 if name == "MODEL_CHECK_INTERVAL_S" else 1):
                raise SettingsError(f"environment variable {name}={value} is out of range")
        return settings
