"""API Gateway's limits on what a client sends, enforced frame by frame in the emulator's server.

API Gateway closes a connection with 1009 when an incoming frame is over 32 KB or a message
over 128 KB, and with 1003 on any binary frame. ASGI hands an app whole messages, so the
emulator app (gateway.py) cannot see frames: the two size limits live here, in the server.
`GatewayProtocol` is uvicorn's sans-I/O WebSocket protocol whose parser (websockets) checks
each frame's length, and the message's running total, before reading the payload (after
inflating it when permessage-deflate is on), and fails the connection with 1009. Binary
frames reach the app as a `bytes` message, which it refuses (1003) before any `$default`.

The protocol marks the scope with the `EXTENSION` extension at the handshake, so the app can
tell it is served with the limits (it refuses clients otherwise), and fills it in when the
parser closed the connection, so `$disconnect` says the gateway closed it, not the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

__all__ = [
    "EXTENSION",
    "MAX_FRAME_BYTES",
    "MAX_MESSAGE_BYTES",
    "GatewayProtocol",
    "refusal_of",
]

# API Gateway's quotas for incoming WebSocket data: 32 KB per frame, 128 KB per message.
MAX_FRAME_BYTES = 32 * 1024
MAX_MESSAGE_BYTES = 128 * 1024
EXTENSION = "devstack.gateway.limits"


class GatewayProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol with API Gateway's frame and message limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # websockets' `max_size=(message, fragment)`, set after uvicorn built the parser
        # with its single `ws_max_size`.
        self.conn.max_message_size = MAX_MESSAGE_BYTES
        self.conn.max_fragment_size = MAX_FRAME_BYTES

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.transport.is_closing():
            # websockets refused the upgrade request (a request line or a header over 8 KB:
            # 414 or 431; a malformed one: 400) and queued its answer, which uvicorn never
            # writes: the client waited for good. Answered and closed, as the gateway does.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:
            scope.setdefault("extensions", {})[EXTENSION] = {}

    def handle_parser_exception(self) -> None:
        """A frame broke a limit (or the protocol): record the close the parser sent."""
        scope = getattr(self, "scope", None)
        closed = self.conn.close_sent
        if scope is not None and closed is not None:
            note = scope.get("extensions", {}).get(EXTENSION)
            if note is not None:
                note.update(code=closed.code, reason=closed.reason)
        super().handle_parser_exception()


def refusal_of(scope: Mapping[str, Any]) -> dict[str, Any] | None:
    """The scope's `EXTENSION` note: None when the server does not enforce the limits, empty
    until the server closed the connection, then its `code` and `reason`."""
    note = (scope.get("extensions") or {}).get(EXTENSION)
    return note if isinstance(note, dict) else None
