"""The gateway emulator under a burst of closes: cleanups never hold up a new handshake.

In AWS each `$disconnect` is a Lambda invocation of its own, so 200 subscribers leaving at
once do not delay the next client's `$connect`. The benchmarks once failed exactly there: a
handshake right after 200 closes timed out, queued behind their cleanups (each a DynamoDB
Query that moto answers by sorting the whole table).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from devstack.gateway import GatewayEmulator

from .test_gateway import TIMEOUT, running

# More closes than the loop's default executor has threads (min(32, cpus + 4)), so without
# threads of their own the blocked cleanups would take every worker a `$connect` could use.
CLOSES = min(32, (os.cpu_count() or 1) + 4) + 2


class StuckCleanups:
    """A handler whose `$disconnect` blocks until released (a cleanup on a slow store)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event["requestContext"]["routeKey"] == "$disconnect":
            with self._lock:
                self.started += 1
            self.release.wait(TIMEOUT * 4)
        return {"statusCode": 200}


async def test_a_burst_of_closes_does_not_hold_up_the_next_handshake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = StuckCleanups()
    async with running(GatewayEmulator(handler), monkeypatch) as gw:
        try:
            clients: list[ClientConnection] = [
                await connect(gw.ws_url, open_timeout=TIMEOUT) for _ in range(CLOSES)
            ]
            await asyncio.gather(*(c.close() for c in clients))
            async with asyncio.timeout(TIMEOUT):
                while handler.started == 0:  # noqa: ASYNC110 -- a thread's counter
                    await asyncio.sleep(0.01)
            # Every cleanup is still blocked: the new client must get in all the same.
            async with connect(gw.ws_url, open_timeout=TIMEOUT / 2) as late:
                assert late.protocol.state.name == "OPEN"
            assert not handler.release.is_set()
        finally:
            handler.release.set()
