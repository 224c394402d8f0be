"""LocalStack: embedded DynamoDB, the WebSocket gateway emulator and the stream app (one process,
or the emulator in a child process with DEV_GATEWAY_PROCESS=true)."""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import os
import socket
from pathlib import Path
from types import ModuleType

from .dynamodb import EmbeddedDynamoDB, start_dynamodb
from .servers import filter_secrets, start_all, stop_all, stop_signal, uvicorn_server
from .settings import DevSettings

ROOT = Path(__file__).resolve().parent.parent


def load_function_module(name: str) -> ModuleType:
    """Import `functions/<name>/app.py` (the functions are deployed folders, not packages)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"{name}_function_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


class LocalStack:
    """Starts the three local services; `run()` serves until Ctrl-C / SIGTERM."""

    def __init__(self, dev: DevSettings) -> None:
        self.dev = dev
        self._moto: EmbeddedDynamoDB | None = None

    def ports(self) -> dict[str, int]:
        return {
            "DEV_HTTP_PORT": self.dev.http_port,
            "DEV_WS_PORT": self.dev.ws_port,
            "DEV_DYNAMODB_PORT": self.dev.dynamodb_port,
        }

    def configure_environment(self) -> None:
        # Real AWS credentials in the caller's shell must never reach the local stack.
        os.environ.update(self.dev.product_env())

    async def run(self) -> None:
        check_ports(self.dev.host, self.ports())
        # The emulated AWS side (DynamoDB and the gateway) runs in this process, or all of it
        # in the gateway's child (DEV_GATEWAY_PROCESS), so the app's CPU is its own.
        if not self.dev.gateway_process:
            self._moto = start_dynamodb(self.dev)
        self.configure_environment()
        from streaming_proxy.api.app import create_app

        from .demo import demo_app
        from .gateway import GatewayProtocol
        from .gateway_process import GatewayProcess, build_gateway

        # Its own process (DEV_GATEWAY_PROCESS) or this one: the same emulator either way.
        child = await GatewayProcess.start(self.dev) if self.dev.gateway_process else None
        gateway = None if child else build_gateway(self.dev)
        servers = [uvicorn_server(demo_app(create_app(), self.dev), self.dev, self.dev.http_port)]
        if gateway is not None:
            servers.append(uvicorn_server(gateway.app, self.dev, self.dev.ws_port, GatewayProtocol))
        filter_secrets()
        stopping = stop_signal()
        tasks = await start_all(servers)
        if all(server.started for server in servers):
            print(banner(self.dev, child.pid if child else None), flush=True)
            waiter = asyncio.create_task(stopping.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        # Connections close (their $disconnect writes rows) before DynamoDB stops.
        if child is not None:
            await child.stop()
        if gateway is not None:
            await gateway.close_all()
        served = await stop_all(servers, tasks)
        if self._moto is not None:
            self._moto.stop()
        if not served:
            raise SystemExit("the local stack could not start (is a port in use?)")


def banner(dev: DevSettings, gateway_pid: int | None = None) -> str:
    http = f"http://{dev.host}:{dev.http_port}"
    ws = f"ws://{dev.host}:{dev.ws_port}"
    where = f"own process, pid {gateway_pid}" if gateway_pid else "this process"
    return f"""
streaming-proxy local stack is ready
  HTTP API + demo  {http}/          (health: {http}/health)
  WebSocket        {ws}/?token=<subscribe token>
  Management API   http://{dev.host}:{dev.ws_port}/{dev.stage}/@connections/<id>
  Gateway emulator + DynamoDB: {where}
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
