"""API Gateway's part, locally: HTTP requests in, REST API (v1) proxy events to a handler.

``sam local start-api`` does this with a container per function; here the handler runs
in-process, on the port (3000) and with the event shape that ``sam local start-api`` uses,
so clients and tests are the same for both. ``make api`` serves the scoring function alone
against the stack's S3 (``.stack/outputs.json``).

Lambda runs one request at a time per execution environment and adds environments under
load. :class:`EnvironmentPool` does the same: each environment is a fresh import of the
handler module (its own cold start, its own loaded model), used by one request at a time,
up to ``max_environments``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devstack.poller import LambdaContext
from devstack.signals import wait_for_stop_signal

log = logging.getLogger("devstack.api")

DEFAULT_API_PORT = 3000
STAGE = "prod"
# API Gateway refuses larger payloads itself (413) before invoking anything.
API_GATEWAY_MAX_BODY_BYTES = 10 * 1024 * 1024


class EnvironmentPool:
    """Execution environments of one function: ``load()`` makes one (a cold start)."""

    def __init__(self, load: Callable[[], ModuleType], handler_name: str, max_environments: int = 4) -> None:
        self._load = load
        self._handler_name = handler_name
        self._max = max_environments
        self._idle: queue.LifoQueue[ModuleType] = queue.LifoQueue()
        self._created = 0
        self._lock = threading.Lock()

    @property
    def created(self) -> int:
        return self._created

    def warm_up(self) -> None:
        """One environment now, so the first request is not a cold start (and a broken
        function fails at start, not on a request)."""
        self._idle.put(self._new())

    def _new(self) -> ModuleType:
        module = self._load()
        self._created += 1
        return module

    def _acquire(self) -> ModuleType:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._created < self._max:
                return self._new()
        return self._idle.get()  # all busy and at the limit: wait, as throttled Lambda would

    def invoke(self, event: dict[str, Any], function_name: str) -> dict[str, Any]:
        module = self._acquire()
        try:
            handler = getattr(module, self._handler_name)
            return handler(event, LambdaContext(function_name=function_name))
        finally:
            self._idle.put(module)


def proxy_event(
    method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as ``sam local start-api`` builds it."""
    parts = urlsplit(raw_path)
    path = parts.path or "/"
    query = parse_qs(parts.query, keep_blank_values=True)
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    try:
        text, is_base64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode("ascii"), True
    now = time.time()
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": multi_headers.get("Host", ["127.0.0.1"])[-1],
            "httpMethod": method,
            "identity": {"sourceIp": source_ip, "userAgent": multi_headers.get("User-Agent", [""])[-1]},
            "path": f"/{STAGE}{path}",
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "resourcePath": path,
            "stage": STAGE,
        },
        "body": text if body else None,
        "isBase64Encoded": is_base64,
    }


def _handler_class(pool: EnvironmentPool, function_name: str) -> type[BaseHTTPRequestHandler]:
    class ProxyHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in two writes; with Nagle's algorithm the second waits for
        # the client's delayed ACK (40 ms) on a keep-alive connection.
        disable_nagle_algorithm = True

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > API_GATEWAY_MAX_BODY_BYTES:
                self.close_connection = True
                message = json.dumps({"message": "Request Too Long"}).encode()
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"Content-Type": "application/json"}, message)
                return
            body = self.rfile.read(length) if length else b""
            event = proxy_event(self.command, self.path, list(self.headers.items()), body, self.client_address[0])
            try:
                result = pool.invoke(event, function_name)
                status = int(result.get("statusCode", 200))
                headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
                for name, values in (result.get("multiValueHeaders") or {}).items():
                    headers.setdefault(str(name), ", ".join(str(v) for v in values))
                raw = result.get("body") or ""
                payload = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode("utf-8")
            except Exception:
                # What API Gateway answers when the function itself fails.
                log.exception("the function failed")
                status, headers = 502, {"Content-Type": "application/json"}
                payload = json.dumps({"message": "Internal server error"}).encode()
            self._send(status, headers, payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _proxy  # noqa: N815 - http.server names

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return ProxyHandler


class LocalApi:
    """An HTTP server on 127.0.0.1:``port`` that proxies every route to one function."""

    def __init__(self, pool: EnvironmentPool, function_name: str, port: int = DEFAULT_API_PORT) -> None:
        self.pool = pool
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_class(pool, function_name))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> LocalApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> int:
    """``make api``: the scoring function alone, against a running ``make stack``."""
    from devstack.cfn import ResolvedStack, load_template
    from devstack.stack import DEFAULT_STATE_DIR, emulator_environment, function_module_loader

    parser = argparse.ArgumentParser(description="Serve the scoring function over HTTP (API Gateway proxy events).")
    parser.add_argument("--port", type=int, default=DEFAULT_API_PORT)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="where make stack wrote outputs.json")
    parser.add_argument("--function", default="ScoringFunction", help="logical id in template.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    outputs_path = args.state_dir / "outputs.json"
    if not outputs_path.exists():
        print(f"{outputs_path} not found: start the stack first (make stack)", file=sys.stderr)
        return 1
    outputs = json.loads(outputs_path.read_text())
    resolved = ResolvedStack(load_template(), stack_name=outputs["StackName"])
    env = {**resolved.function_environment(args.function), **emulator_environment(outputs["EndpointUrl"])}
    pool = EnvironmentPool(*function_module_loader(resolved, args.function, env))
    pool.warm_up()
    try:
        api = LocalApi(pool, resolved.physical_name(args.function), args.port).start()
    except OSError as exc:
        print(
            f"cannot listen on 127.0.0.1:{args.port}: {exc} (make stack serves the API on 3000 already;"
            " pick another port: make api ARGS='--port 3001')",
            file=sys.stderr,
        )
        return 1
    print(f"{args.function} on {api.url} (S3 at {outputs['EndpointUrl']}); Ctrl-C or SIGTERM stops it", flush=True)
    wait_for_stop_signal()
    api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
