"""What the gateway emulator keeps per WebSocket connection, and the ids it gives them."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

__all__ = ["Client", "Message", "new_connection_id"]

Message = MutableMapping[str, Any]  # an ASGI message


def new_connection_id() -> str:
    """An id shaped like API Gateway's ('Ld4Zq3xwoAMCJkQ='), free of '/' and '+' for URLs."""
    while True:
        candidate = base64.b64encode(secrets.token_bytes(11)).decode("ascii")
        if "/" not in candidate and "+" not in candidate:
            return candidate


@dataclass
class Client:
    """One accepted connection and what the emulator knows about it."""

    connection_id: str
    websocket: WebSocket
    source_ip: str
    user_agent: str | None
    connected_at: float = field(default_factory=time.time)  # wall clock, for events
    last_active_at: float = field(default_factory=time.time)
    opened: float = field(default_factory=time.monotonic)  # monotonic, for timeouts
    last_active: float = field(default_factory=time.monotonic)
    inbox: asyncio.Queue[Message | None] = field(default_factory=asyncio.Queue)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closing: bool = False
    close_code: int | None = None
    close_reason: str = ""
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        self.last_active = time.monotonic()
        self.last_active_at = time.time()
