"""A browser tab for the fuzzers: a WebSocket connection that tells which replies answer
which message."""

from __future__ import annotations

import json
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .ws_rules import ConnectionLost, NoReply, NotRefused

REPLY_TIMEOUT = 5.0


@dataclass
class Tab:
    """One connection, reopened (with the same token) after an exchange that failed."""

    url: str
    _ws: ClientConnection | None = field(default=None, init=False)
    _opened: ExitStack = field(default_factory=ExitStack, init=False)

    def exchange(self, frame: str) -> list[str]:
        """Send `frame`, then a fence `ping`; return what came before the fence's `pong`, as
        received (replies come in the order messages were sent, so that is `frame`'s).
        Nothing is judged here: an exchange always reads up to its fence."""
        ws = self._open()
        fence = f"fence-{uuid.uuid4().hex}"
        deadline = time.monotonic() + REPLY_TIMEOUT
        received: list[str] = []
        try:
            ws.send(frame)
            ws.send(json.dumps({"action": "ping", "id": fence}))
            while not _is_pong(
                raw := ws.recv(timeout=max(0.0, deadline - time.monotonic())), fence
            ):
                received.append(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
        except TimeoutError:
            self._drop()  # a late reply must not pass for the next message's
            raise NoReply(f"no answer within {REPLY_TIMEOUT} s; received: {received}") from None
        except ConnectionClosed as e:
            self._drop()
            raise ConnectionLost(f"connection closed ({e}); received: {received}") from None
        return received

    def refused(self, frame: str | bytes) -> int:
        """Send `frame`, which the gateway must refuse: the code of the close it answers
        with, nothing coming before it. The next exchange opens a new connection."""
        ws = self._open()
        try:
            ws.send(frame)
            extra = ws.recv(timeout=REPLY_TIMEOUT)
        except TimeoutError:
            raise NotRefused(f"still open {REPLY_TIMEOUT} s after the frame") from None
        except ConnectionClosed as e:
            if e.rcvd is None:
                raise NotRefused(f"dropped without a close frame ({e})") from None
            return e.rcvd.code
        finally:
            self._drop()
        raise NotRefused(f"the frame reached a route: {extra!r}")

    def close(self) -> None:
        self._drop()

    def _open(self) -> ClientConnection:
        if self._ws is None:
            # No keep-alive pings: the fence pings keep the connection busy enough, and the
            # pinging thread would draw from `random` while Hypothesis generates.
            opening = connect(
                self.url, max_size=2**22, open_timeout=REPLY_TIMEOUT, ping_interval=None
            )
            self._ws = self._opened.enter_context(opening)
        return self._ws

    def _drop(self) -> None:
        self._ws = None
        self._opened.close()


def _is_pong(raw: str | bytes, fence: str) -> bool:
    try:
        message = json.loads(raw)
    except ValueError:
        return False
    return (
        isinstance(message, dict) and message.get("type") == "pong" and message.get("id") == fence
    )
