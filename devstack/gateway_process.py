"""The gateway emulator in a process of its own (`DEV_GATEWAY_PROCESS=true`).

The stack starts `python -m devstack.gateway_process` as its child once the product's
environment is set; the child also runs the embedded DynamoDB (moto), so every emulated AWS
edge is out of the app's process and the app reaches DynamoDB over HTTP, as in AWS. The child
writes to the stack's own output (one log) and is stopped with the stack. Benchmarks use it
so the app's CPU is measured apart from the emulators'.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from .gateway import GatewayEmulator, GatewayProtocol
from .servers import filter_secrets, run_loop, start_all, stop_all, stop_signal, uvicorn_server
from .settings import DevSettings

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "gateway emulator process ready, pid"
START_TIMEOUT_SECONDS = 60.0
# close_all waits up to 35 s for one connection's $disconnect: let it, then kill.
STOP_TIMEOUT_SECONDS = 40.0


def build_gateway(dev: DevSettings) -> GatewayEmulator:
    """The emulator routing to the connections function's handler, as the stack serves it."""
    from .stack import load_function_module

    connections = load_function_module("connections")
    return GatewayEmulator(
        connections.handler,
        stage=dev.stage,
        idle_timeout_seconds=dev.idle_timeout_seconds,
        max_age_seconds=dev.max_age_seconds,
    )


async def serve(dev: DevSettings) -> None:
    """The child's life: the embedded DynamoDB, then the emulator on DEV_WS_PORT, until
    SIGTERM or SIGINT."""
    from .dynamodb import start_dynamodb

    moto = start_dynamodb(dev)
    gateway = build_gateway(dev)
    servers = [uvicorn_server(gateway.app, dev, dev.ws_port, GatewayProtocol)]
    filter_secrets()
    stopping = stop_signal()
    tasks = await start_all(servers)
    if all(server.started for server in servers):
        print(f"{READY_LINE} {os.getpid()}", flush=True)
        waiter = asyncio.create_task(stopping.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    await gateway.close_all()  # their $disconnect writes rows: before DynamoDB stops
    served = await stop_all(servers, tasks)
    moto.stop()
    if not served:
        raise SystemExit("the gateway emulator process could not serve")


class GatewayProcess:
    """The parent's handle on the child: started once its port answers, stopped with SIGTERM."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    async def start(cls, dev: DevSettings) -> GatewayProcess:
        """Spawn the child (same environment, same stdout and stderr) and wait for its port."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devstack.gateway_process", cwd=ROOT
        )
        child = cls(proc)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and proc.returncode is None:
            if await _listening(dev.host, dev.ws_port):
                return child
            await asyncio.sleep(0.05)
        await child.stop()
        raise SystemExit("the gateway emulator process did not start (see the log above)")

    async def stop(self) -> None:
        """SIGTERM (the child closes every connection, $disconnect included), then SIGKILL."""
        if self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()


async def _listening(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(serve(DevSettings()))


if __name__ == "__main__":
    main()
