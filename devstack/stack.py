"""LocalStack: embedded DynamoDB, the WebSocket gateway emulator and the stream app, one process."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.util
import logging
import os
import signal
import socket
from collections.abc import Generator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import uvicorn
from moto.server import ThreadedMotoServer

from .settings import DevSettings
from .template import create_table

ROOT = Path(__file__).resolve().parent.parent


def load_function_module(name: str) -> ModuleType:
    """Import `functions/<name>/app.py` (the functions are deployed folders, not packages)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"{name}_function_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the stack, which stops all servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class PortInUse(SystemExit):
    """A port the stack needs is taken: say which, and how to pick another, then exit."""


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Fail fast, naming the port and its variable, if any port cannot be bound."""
    for variable, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As uvicorn binds: a port left in TIME_WAIT is free, a listening one is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as e:
                why = "is already in use" if e.errno == errno.EADDRINUSE else f"failed: {e}"
                raise PortInUse(
                    f"the local stack cannot start: port {port} on {host} ({variable}) {why}. "
                    f"Stop what uses it, or pick another port: {variable}=<port> make dev"
                ) from e


class SecretsFilter(logging.Filter):
    """Uvicorn's handshake and access lines quote the request line, subscribe token
    (`?token=...`) included: replace every credential-shaped string before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        from streaming_proxy.redact import scrub

        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class LocalStack:
    """Starts the three local services; `run()` serves until Ctrl-C / SIGTERM."""

    def __init__(self, dev: DevSettings) -> None:
        self.dev = dev
        self._moto: ThreadedMotoServer | None = None
        self._servers: list[uvicorn.Server] = []

    def ports(self) -> dict[str, int]:
        return {
            "DEV_HTTP_PORT": self.dev.http_port,
            "DEV_WS_PORT": self.dev.ws_port,
            "DEV_DYNAMODB_PORT": self.dev.dynamodb_port,
        }

    def start_dynamodb(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines
        self._moto = ThreadedMotoServer(ip_address=self.dev.host, port=self.dev.dynamodb_port)
        self._moto.start()
        client = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=f"http://{self.dev.host}:{self.dev.dynamodb_port}",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        create_table(client, self.dev.table_name)

    def configure_environment(self) -> None:
        # Real AWS credentials in the caller's shell must never reach the local stack.
        os.environ.update(self.dev.product_env())

    def _server(self, app: Any, port: int) -> uvicorn.Server:
        config = uvicorn.Config(
            app,
            host=self.dev.host,
            port=port,
            ws="websockets-sansio",
            log_level=self.dev.log_level.lower(),
            access_log=False,
            lifespan="on",
        )
        server = _Server(config)
        self._servers.append(server)
        return server

    async def run(self) -> None:
        check_ports(self.dev.host, self.ports())
        self.start_dynamodb()
        self.configure_environment()
        from streaming_proxy.api.app import create_app

        from .demo import demo_app
        from .gateway import GatewayEmulator

        connections = load_function_module("connections")
        gateway = GatewayEmulator(
            connections.handler,
            stage=self.dev.stage,
            idle_timeout_seconds=self.dev.idle_timeout_seconds,
            max_age_seconds=self.dev.max_age_seconds,
        )
        servers = [
            self._server(gateway.app, self.dev.ws_port),
            self._server(demo_app(create_app(), self.dev), self.dev.http_port),
        ]
        # After the servers' configs: creating one (re)configures uvicorn's loggers.
        for name in ("uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).addFilter(SecretsFilter())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.05)
        if all(server.started for server in servers):
            print(banner(self.dev), flush=True)
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        await gateway.close_all()
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._moto is not None:
            self._moto.stop()
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
        if failed or not all(server.started for server in servers):
            raise SystemExit("the local stack could not start (is a port in use?)")


def banner(dev: DevSettings) -> str:
    http = f"http://{dev.host}:{dev.http_port}"
    ws = f"ws://{dev.host}:{dev.ws_port}"
    return f"""
streaming-proxy local stack is ready
  HTTP API + demo  {http}/          (health: {http}/health)
  WebSocket        {ws}/?token=<subscribe token>
  Management API   http://{dev.host}:{dev.ws_port}/{dev.stage}/@connections/<id>
  DynamoDB (moto)  http://{dev.host}:{dev.dynamodb_port}   table {dev.table_name}
  App key          {dev.api_key}   (app id '{dev.app_id}')

Mint a subscribe token:
  curl -s -X POST {http}/channels/token -H 'x-api-key: {dev.api_key}' \\
       -H 'content-type: application/json' -d '{{"channels": ["demo"]}}'
  or: .venv/bin/streamproxy token --channel demo
Stream with the built-in mock provider:
  curl -s -X POST {http}/llm/query -H 'x-api-key: {dev.api_key}' -H 'accept: text/event-stream' \\
       -H 'content-type: application/json' -d '{{"channels": ["demo"], "actionName": "onLlm",
       "payload": {{"provider": "mock",
                    "messages": [{{"role": "user", "content": "Hello there"}}]}}}}'
Ctrl-C stops everything.
"""
