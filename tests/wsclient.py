"""A real WebSocket subscriber for integration tests: collects every message it receives."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


class Subscriber:
    """One browser-like connection to the gateway emulator."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, ws_url: str, token: str) -> Subscriber:
        ws = await asyncio.wait_for(connect(f"{ws_url}/?token={token}", max_size=2**22), 10)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.messages.append(json.loads(raw))
                self._changed.set()
        except Exception:  # closed: the collected messages stay readable
            self._changed.set()

    async def wait_for(
        self, predicate: Any, within: float = 10.0, *, since: int = 0
    ) -> dict[str, Any]:
        """The first collected message matching `predicate`, from message number `since` on
        (waiting for it, bounded)."""
        async with asyncio.timeout(within):
            while True:
                for message in self.messages[since:]:
                    if predicate(message):
                        return message
                self._changed.clear()
                await self._changed.wait()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def connection_id(self) -> str:
        await self.send({"action": "ping", "id": "whoami"})
        pong = await self.wait_for(lambda m: m.get("type") == "pong" and m.get("id") == "whoami")
        return str(pong["connectionId"])

    async def stream(self, stream_id: str, within: float = 15.0) -> list[dict[str, Any]]:
        """Every message of `stream_id` up to and including its `end`."""
        await self.wait_for(
            lambda m: m.get("streamId") == stream_id and m.get("type") == "end", within
        )
        return self.of(stream_id)

    def of(self, stream_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("streamId") == stream_id and "seq" in m]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


def text_of(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"] for m in messages if m["type"] == "delta")


async def until_end(ws: ClientConnection, within: float = 10.0) -> list[dict[str, Any]]:
    """What a bare connection receives up to and including an `end` (each message bounded)."""
    messages: list[dict[str, Any]] = []
    while not messages or messages[-1]["type"] != "end":
        messages.append(json.loads(await asyncio.wait_for(ws.recv(), within)))
    return messages


async def nothing_more(ws: ClientConnection, within: float = 1.0) -> None:
    """Nothing else arrives on `ws` for `within` seconds."""
    try:
        extra = await asyncio.wait_for(ws.recv(), within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {extra!r}")
