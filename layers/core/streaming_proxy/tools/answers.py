"""Accepting a frontend tool's answer, from a WebSocket connection or over HTTPS.

An answer is taken only for a call of the same app that a stream is waiting on, only from
a connection (or token) on one of that stream's channels, only up to a size cap, and only
once: the first answer wins.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from ..errors import Conflict, Forbidden, NotFound, PayloadTooLarge
from ..toolcalls import ToolCallStore


def accept_answer(
    store: ToolCallStore,
    app_id: str,
    call_id: str,
    answer: dict[str, Any],
    *,
    channels: Collection[str] | None,
    by: str,
    max_bytes: int,
) -> None:
    """Record `answer` for the call, or raise: NotFound (no such waiting call of this app),
    Forbidden (`channels` share none of the stream's; None means the app key, which may
    answer any of its calls), PayloadTooLarge, Conflict (answered already by someone else,
    or no longer waited on). An answer identical to the recorded one is accepted again: its
    sender (a tab whose ack was lost, maybe reconnected under a new connection id) already
    passed the checks above, and the model gets exactly what it sent."""
    size = len(json.dumps(answer, ensure_ascii=False).encode("utf-8"))
    if size > max_bytes:
        raise PayloadTooLarge(f"tool answer of {size} bytes is over the {max_bytes}-byte limit")
    record = store.get(app_id, call_id)
    if record is None:
        raise NotFound(f"no tool call {call_id!r} is waiting for an answer")
    if channels is not None and not set(channels) & set(record.channels):
        raise Forbidden("the tool call belongs to a stream on channels you are not in")
    if record.status == "waiting" and store.answer(app_id, call_id, answer, by):
        return
    again = store.get(app_id, call_id)
    if again is not None and again.answer == answer:
        return
    raise Conflict(f"tool call {call_id!r} was already answered or is no longer waited on")
