"""Which training path the embedded stack takes: the training image through a Docker API, or
the training entrypoint as a subprocess when no engine (or no image) is there.

``scripts/container-engine.sh up`` provides an engine on machines without Docker (podman's
Docker-API service); ``make training-image`` builds the image.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

#: The tag ``make training-image`` builds and the embedded stack runs.
DEFAULT_TRAINING_IMAGE = "fraud-training:local"
#: Where scripts/container-engine.sh serves podman's Docker API.
PODMAN_SOCKET = Path("/run/podman/podman.sock")


@dataclass(frozen=True)
class TrainingPath:
    backend: str  # "docker" or "local"
    image: str
    reason: str

    def describe(self) -> str:
        if self.backend == "docker":
            return f"training container {self.image} through the Docker API ({self.reason})"
        return f"training entrypoint as a local process ({self.reason})"


def docker_environment() -> dict[str, str]:
    """DOCKER_HOST as set, or podman's socket from scripts/container-engine.sh when it exists."""
    if os.environ.get("DOCKER_HOST"):
        return {"DOCKER_HOST": os.environ["DOCKER_HOST"]}
    if PODMAN_SOCKET.is_socket():
        return {"DOCKER_HOST": f"unix://{PODMAN_SOCKET}"}
    return {}


def docker_client(timeout_s: float = 10.0):  # type: ignore[no-untyped-def]
    """A Docker SDK client for the engine that answers, or None."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.DockerClient(
            base_url=docker_environment().get("DOCKER_HOST", "unix:///var/run/docker.sock"), timeout=int(timeout_s)
        )
        client.ping()
    except DockerException:
        return None
    return client


def choose_training_path(requested: str, image: str = DEFAULT_TRAINING_IMAGE) -> TrainingPath:
    """``requested`` is "auto", "docker" or "local".

    Raises
    ------
    RuntimeError
        When "docker" is requested and no engine answers or the image is missing.
    """
    if requested == "local":
        return TrainingPath("local", image, "asked for")
    client = docker_client()
    if client is None:
        reason = "no Docker engine answers; scripts/container-engine.sh up starts one"
    else:
        from docker.errors import ImageNotFound

        try:
            client.images.get(image)
            return TrainingPath("docker", image, "a Docker engine answers and the image is built")
        except ImageNotFound:
            reason = f"the image {image} is not built; make training-image builds it"
        finally:
            client.close()
    if requested == "docker":
        raise RuntimeError(f"cannot train in a container: {reason}")
    return TrainingPath("local", image, reason)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """``--training`` and ``--training-image``, as ``make stack`` and ``make demo`` take them."""
    parser.add_argument(
        "--training",
        choices=("auto", "docker", "local"),
        default="auto",
        help="train in the training image through a Docker API, in a local process, or auto "
        "(the container when an engine answers and the image is built)",
    )
    parser.add_argument("--training-image", default=DEFAULT_TRAINING_IMAGE)
