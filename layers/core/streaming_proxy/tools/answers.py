"""Accepting a frontend tool's answer, from a WebSocket connection or over HTTPS.

An answer is taken only for a call of the same app that a stream is waiting on, only from
a connection (or token) on one of that stream's channels, only up to a size cap, and only
once: the first answer wins.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from ..errors import Conflict, Forbidden, NotFound, PayloadTooLarge
from ..toolcalls import ToolCallStore


class ToolAnswer(BaseModel):
    """A frontend tool's answer as a page sends it (over WebSocket or HTTPS). Keys beyond the
    named ones are kept and go to the model (Klai does).

    `answerId` is the sender's own id for this answer, the same on every resend: a tab that
    sends again after a reconnect (new connection id, the first ack lost) is recognised as the
    sender of the recorded answer, while another tab answering the same call is not."""

    # Built on first use, not at import: answers come only from streams with frontend tools,
    # never on a stream's first request (docs/architecture.md decision 31). Subclasses
    # inherit it; a TypeAdapter over one (channels/session.py) builds it with itself.
    model_config = ConfigDict(populate_by_name=True, extra="allow", defer_build=True)

    tool_call_id: StrictStr = Field(alias="toolCallId", min_length=1, max_length=256)
    success: StrictBool
    message: StrictStr
    data: Any = None
    answer_id: StrictStr | None = Field(
        default=None, alias="answerId", min_length=1, max_length=128
    )

    # Fields of the message that are not part of the answer (credentials, the action).
    NOT_ANSWER: ClassVar[frozenset[str]] = frozenset({"answer_id"})
    # Credentials a page may send beside its answer, on any route: the answer goes to the
    # model and into the thread's history, which pages on other channels read.
    CREDENTIALS: ClassVar[frozenset[str]] = frozenset({"token", "api_key", "apiKey"})

    def answer(self) -> dict[str, Any]:
        """The answer as the model gets it (no `data` is no `data`, not null), without
        the sender's credentials."""
        skip = {*self.NOT_ANSWER, *self.CREDENTIALS, *(["data"] if self.data is None else [])}
        return self.model_dump(by_alias=True, exclude=skip)

    def sender(self, fallback: str) -> str:
        """Who answered, for the first-answer-wins rule: the answer's own id when it has one,
        else `fallback` (the connection id, or how an HTTPS sender proved itself)."""
        return f"answer {self.answer_id}" if self.answer_id else fallback


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
    or no longer waited on). The sender of the recorded answer repeating it (its ack was
    lost) is accepted again; anyone else, even with the same answer, gets Conflict: that
    tab ran the tool too, and must learn its answer was not the one taken."""
    size = len(json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
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
    if again is not None and again.answered_by == by and again.answer == answer:
        return
    raise Conflict(f"tool call {call_id!r} was already answered or is no longer waited on")
