"""The embedded stack: ``make stack``.

* an AWS API endpoint: moto's server on 127.0.0.1:4566 (LocalStack's port), or, when
  ``AWS_ENDPOINT_URL`` is set, that endpoint (LocalStack, or AWS itself) and no moto;
* the resources of template.yaml, created by :mod:`devstack.provision`;
* Lambda's part: an SQS poller per SQS event source of the template, invoking the function's
  handler in-process with the function's environment from the template;
* API Gateway's part: functions with Api events served over HTTP on 127.0.0.1:3000
  (:mod:`devstack.api`, the port and event shape of ``sam local start-api``);
* ``.stack/outputs.json`` with the template's Outputs (and the endpoint).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shlex
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from devstack.api import DEFAULT_API_PORT, EnvironmentPool, LocalApi
from devstack.cfn import DEFAULT_STACK_NAME, ResolvedStack, load_template
from devstack.engine import (
    DEFAULT_TRAINING_IMAGE,
    TrainingPath,
    add_training_arguments,
    choose_training_path,
    docker_environment,
)
from devstack.poller import SqsEventSourcePoller
from devstack.provision import provision
from devstack.signals import wait_for_stop_signal
from fraudlib import aws

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 4566
DEFAULT_STATE_DIR = REPO_ROOT / ".stack"
log = logging.getLogger("devstack")

# Credentials for an emulator; real ones in the environment are never overridden.
_EMULATOR_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def emulator_environment(endpoint_url: str) -> dict[str, str]:
    """What an in-process function needs to reach the emulated endpoint."""
    env = {name: os.environ.get(name, value) for name, value in _EMULATOR_ENV.items()}
    env.update(AWS_ENDPOINT_URL=endpoint_url, POWERTOOLS_TRACE_DISABLED="true")
    return env


def image_handler(dockerfile: Path) -> tuple[str, str]:
    """(code directory, handler) of an image function: the Dockerfile's folder and its CMD."""
    for line in reversed(dockerfile.read_text(encoding="utf-8").splitlines()):
        if line.strip().startswith("CMD"):
            command = json.loads(line.strip()[3:].strip())
            return str(dockerfile.parent.relative_to(REPO_ROOT)), str(command[0])
    raise ValueError(f"{dockerfile} has no CMD naming the handler")


def function_code(resolved: ResolvedStack, logical_id: str) -> tuple[str, str]:
    """(code directory, handler) of a zip or image function of the template."""
    props = resolved.properties(logical_id)
    if props.get("PackageType") == "Image":
        metadata = resolved.resources[logical_id].get("Metadata", {})
        context = REPO_ROOT / metadata.get("DockerContext", ".")
        return image_handler(context / metadata.get("Dockerfile", "Dockerfile"))
    return str(props["CodeUri"]), str(props["Handler"])


def function_module_loader(
    resolved: ResolvedStack, logical_id: str, env: dict[str, str]
) -> tuple[Callable[[], ModuleType], str]:
    """A loader making a fresh execution environment of the function, and the handler's name."""
    code_uri, handler = function_code(resolved, logical_id)
    return (lambda: load_function_module(code_uri, handler, env)), handler.rsplit(".", 1)[1]


def load_function_module(code_uri: str, handler: str, env: dict[str, str]) -> ModuleType:
    """Import a function's handler module fresh, with its environment set first.

    Handlers read their settings at import (cold start), so the environment goes in before.
    """
    os.environ.update(env)
    module_name, _ = handler.rsplit(".", 1)
    path = REPO_ROOT / code_uri / f"{module_name}.py"
    spec = importlib.util.spec_from_file_location(f"_lambda_{path.parent.name}_{module_name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class EmbeddedStack:
    """Start, use and stop the whole data path of the template on one endpoint.

    Parameters
    ----------
    stack_name : str
        Names resources as ``sam deploy --stack-name`` would.
    port : int or None
        Port of the embedded moto server (``None``: a free one); ignored when
        ``AWS_ENDPOINT_URL`` is set.
    host : str
        Address moto listens on: 127.0.0.1, or 0.0.0.0 so that function containers of
        ``sam local`` reach it through the engine's bridge (scripts/sam-local.sh).
    state_dir : Path
        Where outputs.json and the local training jobs' logs go.
    function_env : dict
        Extra environment for the functions (e.g. drift settings for a test).
    api_port : int or None
        Port of the local API (API Gateway's part) for functions with Api events; 0 picks a
        free one, None serves none.
    api_environments : int
        Most concurrent execution environments of an API function.
    training : TrainingPath or None
        How the drift function starts training (:mod:`devstack.engine`); None: a local process.
    """

    def __init__(
        self,
        stack_name: str = DEFAULT_STACK_NAME,
        *,
        port: int | None = DEFAULT_PORT,
        state_dir: Path = DEFAULT_STATE_DIR,
        function_env: dict[str, str] | None = None,
        retry_delay_s: int = 1,
        api_port: int | None = DEFAULT_API_PORT,
        api_environments: int = 2,
        training: TrainingPath | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.stack_name = stack_name
        self.training = training or TrainingPath("local", DEFAULT_TRAINING_IMAGE, "the default")
        self.api_port = api_port
        self.api_environments = api_environments
        self.api_url = ""
        self._apis: list[LocalApi] = []
        self.port = port
        self.state_dir = Path(state_dir).resolve()
        self.function_env = dict(function_env or {})
        self.retry_delay_s = retry_delay_s
        self.resolved = ResolvedStack(load_template(), stack_name=stack_name)
        self.outputs: dict[str, str] = {}
        self.endpoint_url = ""
        self.modules: dict[str, ModuleType] = {}
        self._moto: Any = None
        self._pollers: list[SqsEventSourcePoller] = []

    # -- endpoint -------------------------------------------------------------------
    def _start_endpoint(self) -> None:
        external = os.environ.get("AWS_ENDPOINT_URL", "")
        if external and self._moto is None:
            self.endpoint_url = external
            log.info("using the AWS endpoint in AWS_ENDPOINT_URL: %s (no moto started)", external)
        else:
            from moto.server import ThreadedMotoServer

            # Its per-request access log would drown everything else.
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            port = self.port or free_port()
            # moto binds in its own thread and, when the port is taken, waits forever for a
            # server that never starts: find out here, where the caller can say so.
            try:
                socket.create_server((self.host, port)).close()
            except OSError as exc:
                raise OSError(f"cannot listen on {self.host}:{port}: {exc.strerror or exc}") from exc
            self._moto = ThreadedMotoServer(ip_address=self.host, port=port, verbose=False)
            self._moto.start()
            self.endpoint_url = f"http://127.0.0.1:{port}"
            os.environ["AWS_ENDPOINT_URL"] = self.endpoint_url
            log.info("embedded moto server on %s", self.endpoint_url)
        for name, value in _EMULATOR_ENV.items():
            os.environ.setdefault(name, value)

    # -- functions ------------------------------------------------------------------
    def function_environment(self, logical_id: str) -> dict[str, str]:
        env = self.resolved.function_environment(logical_id)
        env.update(
            TRAINING_BACKEND=self.training.backend,
            # The training entrypoint, by absolute path: the job may start from any directory.
            LOCAL_TRAINING_COMMAND=shlex.join([sys.executable, str(REPO_ROOT / "training_job" / "entrypoint.py")]),
            LOCAL_TRAINING_LOG_DIR=str(self.state_dir / "jobs"),
            # Where local training jobs keep MLflow's SQLite store and artifacts.
            FRAUD_STATE_DIR=str(self.state_dir),
            POWERTOOLS_TRACE_DISABLED="true",
            AWS_ENDPOINT_URL=self.endpoint_url,
        )
        if self.training.backend == "docker":
            env.update(
                docker_environment(),
                TRAINING_IMAGE=self.training.image,
                # The host's network: the container reaches moto on 127.0.0.1 as we do.
                TRAINING_DOCKER_NETWORK="host",
                # The state folder at the same path, so MLflow's store is the host's own.
                TRAINING_DOCKER_MOUNTS=f"{self.state_dir}:{self.state_dir}",
            )
        env.update(self.function_env)
        return env

    def _start_functions(self) -> None:
        sqs = aws.client("sqs", self.resolved.region)
        for logical_id in self.resolved.of_type("AWS::Serverless::Function"):
            events = self.resolved.properties(logical_id).get("Events", {}).values()
            sqs_events = [e for e in events if e["Type"] == "SQS"]
            api_events = [e for e in events if e["Type"] == "Api"]
            load, handler_name = function_module_loader(
                self.resolved, logical_id, self.function_environment(logical_id)
            )
            if api_events and self.api_port is not None:
                pool = EnvironmentPool(load, handler_name, self.api_environments)
                pool.warm_up()
                api = LocalApi(pool, self.resolved.physical_name(logical_id), self.api_port).start()
                self._apis.append(api)
                self.api_url = api.url
                log.info("%s serves %s (API Gateway proxy events)", logical_id, api.url)
            if not sqs_events:
                continue
            module = load()
            self.modules[logical_id] = module
            handler = getattr(module, handler_name)
            for event in sqs_events:
                queue_logical_id = event["Properties"]["Queue"]["Fn::GetAtt"][0]
                poller = SqsEventSourcePoller(
                    sqs,
                    queue_url=self.resolved.queue_url(queue_logical_id),
                    queue_arn=self.resolved.get_att(queue_logical_id, "Arn"),
                    region=self.resolved.region,
                    handler=handler,
                    function_name=self.resolved.physical_name(logical_id),
                    batch_size=int(event["Properties"].get("BatchSize", 10)),
                    retry_delay_s=self.retry_delay_s,
                )
                poller.start()
                self._pollers.append(poller)

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> EmbeddedStack:
        self._start_endpoint()
        self.outputs = provision(self.resolved)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._start_functions()
        if self.api_url:
            self.outputs["ApiUrl"] = self.api_url  # the local API instead of execute-api
        self.write_outputs()
        return self

    def write_outputs(self) -> Path:
        path = self.state_dir / "outputs.json"
        document = {**self.outputs, "EndpointUrl": self.endpoint_url, "StackName": self.stack_name}
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return path

    def stop(self) -> None:
        for api in self._apis:
            api.stop()
        self._apis.clear()
        for poller in self._pollers:
            poller.stop()
        self._pollers.clear()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the embedded AWS stack of template.yaml.")
    parser.add_argument("--stack-name", default=DEFAULT_STACK_NAME)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="moto server port (default 4566)")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="where outputs.json goes")
    parser.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help="local API port (default 3000)")
    add_training_arguments(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address moto listens on; 0.0.0.0 lets sam local's containers reach it (an emulator "
        "with no authentication: only on a machine whose network you trust)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        training = choose_training_path(args.training, args.training_image)
    except RuntimeError as exc:
        print(f"could not start the embedded stack: {exc}", file=sys.stderr)
        return 1
    print(f"training path: {training.describe()}", flush=True)
    stack = EmbeddedStack(
        stack_name=args.stack_name,
        port=args.port,
        state_dir=args.state_dir,
        api_port=args.api_port,
        training=training,
        host=args.host,
    )
    try:
        stack.start()
    except OSError as exc:
        print(f"could not start the embedded stack: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    print(f"embedded stack {args.stack_name} is up on {stack.endpoint_url}")
    print(json.dumps({**stack.outputs, "EndpointUrl": stack.endpoint_url}, indent=2))
    print(f"outputs written to {stack.state_dir / 'outputs.json'}; Ctrl-C or SIGTERM stops it", flush=True)
    wait_for_stop_signal()
    print("stopping the embedded stack")
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
