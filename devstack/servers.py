"""Uvicorn servers as the local stack runs them: signals left to the stack, no tokens in logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine, Generator, Sequence
from typing import Any, TypeVar

import uvicorn
import uvloop

from .settings import DevSettings


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the stack, which stops all servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


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


T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a stack process's servers on uvloop, the event loop run.sh gives uvicorn in the
    stream function, so local numbers and behaviour are the deployed code's."""
    return uvloop.run(main)


def uvicorn_server(
    app: Any, dev: DevSettings, port: int, ws: type[asyncio.Protocol] | str = "websockets-sansio"
) -> QuietServer:
    """One server of the stack on `dev.host:port`: httptools parses HTTP, as in the stream
    function (run.sh); WebSockets on the sans-I/O implementation, or `ws` (the gateway
    emulator's `GatewayProtocol`). The event loop is the caller's (`run_loop`)."""
    config = uvicorn.Config(
        app,
        host=dev.host,
        port=port,
        http="httptools",
        ws=ws,
        log_level=dev.log_level.lower(),
        access_log=False,
        lifespan="on",
    )
    return QuietServer(config)


def filter_secrets() -> None:
    """Call after the servers' configs: creating one (re)configures uvicorn's loggers."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(SecretsFilter())


def stop_signal() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (Ctrl-C, or the parent stopping this process)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def start_all(servers: Sequence[uvicorn.Server]) -> list[asyncio.Task[None]]:
    """Start serving; returns once every server listens or one of them failed."""
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks):
            break
        await asyncio.sleep(0.05)
    return tasks


async def stop_all(servers: Sequence[uvicorn.Server], tasks: list[asyncio.Task[None]]) -> bool:
    """Ask every server to exit and wait; True when all had started and none failed."""
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
    return not failed and all(server.started for server in servers)
