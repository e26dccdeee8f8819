"""Start a training job: on SageMaker (what AWS runs), as a container of the training image
through a Docker API, or as a local subprocess (the dev stack without an engine).

Every backend takes the same :class:`TrainingRequest` and returns a handle at once; none
waits for the job. The job receives the same inputs either way (hyperparameters, S3
locations, environment), so the same training entrypoint serves all three.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from fraudlib.config import DockerTrainingSettings, LocalTrainingSettings, SageMakerSettings
from fraudlib.layout import BASE_DATASET_KEY, INCOMING_PREFIX

log = logging.getLogger(__name__)
TRAINING_OUTPUT_PREFIX = "training-output/"
#: What a training container inherits from the launcher's environment besides the request's
#: own variables: how to reach AWS (or the emulator, with any per-service endpoints), where
#: MLflow and the state folder are, and the job's TRAIN_* settings. Nothing else leaks in.
CONTAINER_ENV_NAMES = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "MLFLOW_TRACKING_URI",
    "FRAUD_STATE_DIR",
    "TRAINING_LOG_LEVEL",
)
CONTAINER_ENV_PREFIXES = ("TRAIN_", "AWS_ENDPOINT_URL_")  # per-service endpoints, as botocore reads them
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


def container_environment(base_env: dict[str, str]) -> dict[str, str]:
    """The part of ``base_env`` a training container inherits (see CONTAINER_ENV_NAMES)."""
    return {
        name: value
        for name, value in base_env.items()
        if name in CONTAINER_ENV_NAMES or name.startswith(CONTAINER_ENV_PREFIXES)
    }


def docker_volumes(mounts: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``HOST:CONTAINER[:MODE]`` strings as the Docker SDK's ``volumes`` argument."""
    volumes: dict[str, dict[str, str]] = {}
    for mount in mounts:
        host_path, container_path, *mode = mount.split(":")
        volumes[host_path] = {"bind": container_path, "mode": mode[0] if mode else "rw"}
    return volumes


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


class DockerLauncher:
    """Runs the training image as a container through the Docker API (``DOCKER_HOST``).

    The same image SageMaker runs, started the way SageMaker starts it (``train`` plus the
    hyperparameters as flags). ``on_exit(job_id, return_code)`` is called from a watcher
    thread when the container ends; its output goes to ``<log_dir>/<job_id>.log`` and the
    container is then removed.
    """

    backend = "docker"

    def __init__(
        self,
        settings: DockerTrainingSettings,
        on_exit: Callable[[str, int], None] | None = None,
        base_env: dict[str, str] | None = None,
        client: Any = None,
    ) -> None:
        self._settings = settings
        self.on_exit = on_exit
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._client = client

    def _docker(self) -> Any:
        if self._client is None:
            import docker  # the Docker SDK: development dependency, never on Lambda

            # Reads wait as long as the job is silent (LightGBM, the ONNX export).
            self._client = docker.from_env(timeout=24 * 3600)
        return self._client

    def container_spec(self, request: TrainingRequest) -> dict[str, Any]:
        """The ``containers.run`` arguments (kept separate so they can be inspected)."""
        flags = [part for name, value in request.hyperparameters().items() for part in (f"--{name}", value)]
        return {
            "image": self._settings.image,
            "command": ["train", *flags],
            "name": request.job_id,
            "environment": {**container_environment(self._base_env), **request.environment()},
            "network_mode": self._settings.network,
            "volumes": docker_volumes(self._settings.mounts),
            "labels": {"fraud-detection.job-id": request.job_id},
            "detach": True,
        }

    def start(self, request: TrainingRequest) -> str:
        container = self._docker().containers.run(**self.container_spec(request))
        threading.Thread(
            target=self._watch,
            args=(request.job_id, container),
            name=f"watch-{request.job_id}",
            daemon=True,
        ).start()
        return f"container:{container.short_id} image:{self._settings.image}"

    def _watch(self, job_id: str, container: Any) -> None:
        log_dir = Path(self._settings.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        # The output is followed as it comes, not fetched at the end: under podman 4.3 a
        # detached container whose output nobody reads ran 15 times slower (measured: 496 s
        # against 32 s for the same job), its writes stalling.
        try:
            with (log_dir / f"{job_id}.log").open("ab") as job_log:
                for chunk in container.logs(stream=True, follow=True):
                    job_log.write(chunk)
                    job_log.flush()
            return_code = int(container.wait()["StatusCode"])
        except Exception:  # the engine went away: the job's outcome is unknown
            log.exception("lost track of training container %s", job_id)
            return_code = -1
        try:
            container.remove()
        except Exception:  # the outcome must still be recorded; the container stays for inspection
            log.exception("could not remove training container %s", job_id)
        if self.on_exit is not None:
            self.on_exit(job_id, return_code)
