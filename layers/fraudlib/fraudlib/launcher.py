"""Start a training job: on SageMaker (what AWS runs) or as a local subprocess (the dev stack).

Both backends take the same :class:`TrainingRequest` and return a handle at once; neither
waits for the job. The job receives the same inputs either way (hyperparameters, S3
locations, environment), so the same training entrypoint serves both.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from fraudlib.config import LocalTrainingSettings, SageMakerSettings
from fraudlib.layout import BASE_DATASET_KEY, INCOMING_PREFIX

TRAINING_OUTPUT_PREFIX = "training-output/"
BASE_DATASET_PREFIX = BASE_DATASET_KEY.rsplit("/", 1)[0] + "/"


def new_job_id(now: datetime) -> str:
    """A SageMaker-valid job name (``[a-zA-Z0-9-]``, <= 63 chars), unique and sortable."""
    return f"retrain-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class TrainingRequest:
    """What a training job needs to know about why and on what it runs."""

    job_id: str
    incoming_bucket: str
    artifacts_bucket: str
    lock_table: str
    trigger_uri: str
    drift_report_uri: str
    mlflow_tracking_uri: str = ""

    def hyperparameters(self) -> dict[str, str]:
        """Passed as SageMaker hyperparameters (strings) and as CLI flags locally."""
        return {
            "job-id": self.job_id,
            "trigger-uri": self.trigger_uri,
            "drift-report-uri": self.drift_report_uri,
        }

    def environment(self) -> dict[str, str]:
        env = {
            "INCOMING_BUCKET": self.incoming_bucket,
            "ARTIFACTS_BUCKET": self.artifacts_bucket,
            "LOCK_TABLE": self.lock_table,
            "TRAINING_JOB_ID": self.job_id,
        }
        if self.mlflow_tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.mlflow_tracking_uri
        return env


class TrainingLauncher(Protocol):
    backend: str

    def start(self, request: TrainingRequest) -> str:
        """Start the job and return its handle (an ARN, a process id); never waits for it."""
        ...


class SageMakerLauncher:
    """``CreateTrainingJob`` with the training image and the execution role."""

    backend = "sagemaker"

    def __init__(self, sagemaker: Any, settings: SageMakerSettings) -> None:
        self._sagemaker = sagemaker
        self._settings = settings

    def training_job_request(self, request: TrainingRequest) -> dict[str, Any]:
        """The exact CreateTrainingJob parameters (kept separate so they can be inspected)."""
        settings = self._settings

        def channel(name: str, bucket: str, prefix: str) -> dict[str, Any]:
            return {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{bucket}/{prefix}",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }

        stopping: dict[str, int] = {"MaxRuntimeInSeconds": settings.max_runtime_s}
        if settings.use_spot:
            # Spot capacity may take a while to come; allow twice the runtime in waiting.
            stopping["MaxWaitTimeInSeconds"] = 2 * settings.max_runtime_s
        return {
            "TrainingJobName": request.job_id,
            "AlgorithmSpecification": {
                "TrainingImage": settings.image_uri,
                "TrainingInputMode": "File",
            },
            "RoleArn": settings.role_arn,
            "HyperParameters": request.hyperparameters(),
            "Environment": request.environment(),
            "InputDataConfig": [
                channel("base", request.artifacts_bucket, BASE_DATASET_PREFIX),
                channel("incoming", request.incoming_bucket, INCOMING_PREFIX),
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{request.artifacts_bucket}/{TRAINING_OUTPUT_PREFIX}"},
            "ResourceConfig": {
                "InstanceType": settings.instance_type,
                "InstanceCount": 1,
                "VolumeSizeInGB": settings.volume_size_gb,
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": settings.use_spot,
            "Tags": [{"Key": "fraud-detection:trigger", "Value": request.trigger_uri[:256]}],
        }

    def start(self, request: TrainingRequest) -> str:
        response = self._sagemaker.create_training_job(**self.training_job_request(request))
        return str(response["TrainingJobArn"])


class LocalProcessLauncher:
    """Runs the training entrypoint as a subprocess of this machine (the embedded stack).

    ``on_exit(job_id, return_code)`` is called from a watcher thread when the process ends,
    so that the caller can record the outcome and release the training lock.
    """

    backend = "local"

    def __init__(
        self,
        settings: LocalTrainingSettings,
        on_exit: Callable[[str, int], None] | None = None,
        base_env: dict[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self.on_exit = on_exit
        self._base_env = dict(os.environ if base_env is None else base_env)

    def command(self, request: TrainingRequest) -> list[str]:
        flags = [part for name, value in request.hyperparameters().items() for part in (f"--{name}", value)]
        return [*self._settings.command, *flags]

    def start(self, request: TrainingRequest) -> str:
        log_dir = Path(self._settings.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{request.job_id}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                self.command(request),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self._base_env, **request.environment()},
                start_new_session=True,
            )
        if self.on_exit is not None:
            threading.Thread(
                target=self._watch,
                args=(request.job_id, process),
                name=f"watch-{request.job_id}",
                daemon=True,
            ).start()
        return f"pid:{process.pid} log:{log_path}"

    def _watch(self, job_id: str, process: subprocess.Popen[bytes]) -> None:
        return_code = process.wait()
        if self.on_exit is not None:
            self.on_exit(job_id, return_code)
