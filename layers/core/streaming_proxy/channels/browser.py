"""What a browser may send over the WebSocket: one typed model per `action`, and its parse."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
)
from pydantic import ValidationError as PydanticValidationError

from ..errors import BadRequest, ProxyError, ValidationFailed, error_object, field_problems
from ..ids import THREAD_ID
from ..textcheck import parse_json
from ..threadpages import MAX_PAGE
from ..tools.answers import ToolAnswer
from .names import ChannelName

__all__ = [
    "ACTIONS",
    "BrowserMessage",
    "History",
    "Ping",
    "Resume",
    "Stop",
    "Subscribe",
    "ToolCallResponse",
    "Unsubscribe",
    "error_message",
    "parse_browser_message",
    "request_of",
]


class _Action(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class Subscribe(_Action):
    action: Literal["subscribe"]
    channel: ChannelName
    token: StrictStr | None = None


class Unsubscribe(_Action):
    action: Literal["unsubscribe"]
    channel: ChannelName


# An echoed string's longest: a reply repeats what identifies its message, never more.
MAX_ECHO_CHARS = 256


class Ping(_Action):
    action: Literal["ping"]
    # Echoed in the pong: bounded as every echo is, so the reply always fits a message.
    id: (
        Annotated[StrictStr, Field(max_length=MAX_ECHO_CHARS)]
        | Annotated[StrictInt, Field(gt=-(2**53), lt=2**53)]
        | None
    ) = None


class Stop(_Action):
    action: Literal["stop"]
    stream_id: StrictStr = Field(alias="streamId", min_length=1, max_length=128)


class Resume(_Action):
    action: Literal["resume"]
    stream_id: StrictStr = Field(alias="streamId", min_length=1, max_length=128)
    after_seq: StrictInt = Field(default=-1, alias="afterSeq")


def _digits(value: object) -> object:
    """A string of digits (what a page's `nextCursor` is) read as the number it names."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value):
        return int(value)
    return value


class History(_Action):
    """A page of a thread's messages (a reloaded page shows its conversation again)."""

    action: Literal["history"]
    thread_id: StrictStr = Field(alias="threadId", pattern=THREAD_ID)
    # A message's number, never negative: as `GET /threads/{id}/messages?cursor=` refuses one.
    cursor: Annotated[StrictInt, BeforeValidator(_digits), Field(ge=0)] = 0
    limit: StrictInt = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)


class ToolCallResponse(ToolAnswer):
    """A frontend tool's answer over the WebSocket."""

    action: Literal["llmToolCallResponse"]

    NOT_ANSWER: ClassVar[frozenset[str]] = frozenset({"answer_id", "action"})


BrowserMessage = Annotated[
    Subscribe | Unsubscribe | Ping | Stop | Resume | History | ToolCallResponse,
    Field(discriminator="action"),
]
_BROWSER_MESSAGE: TypeAdapter[BrowserMessage] = TypeAdapter(BrowserMessage)
ACTIONS = frozenset(
    {"subscribe", "unsubscribe", "ping", "stop", "resume", "history", "llmToolCallResponse"}
)


# The fields that tell one request from another of its kind, echoed in its action error.
REQUEST_KEYS = ("action", "channel", "streamId", "toolCallId", "threadId", "cursor", "id")


def error_message(error: ProxyError, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `error` reply for a refused browser message; `request` says which one it was."""
    reply: dict[str, Any] = {"type": "error", "error": error_object(error)}
    if request:
        reply["request"] = request
    return reply


def request_of(body: str | None) -> dict[str, Any]:
    """What identifies a browser message (its action and key fields, as sent), so its action
    error names it: API Gateway runs a connection's messages concurrently, so replies may come
    in another order than the requests. Empty for a message that is not a JSON object;
    a key that is not a short string or an integer is left out."""
    try:
        raw = parse_json(body or "", "message")
    except ProxyError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {key: raw[key] for key in REQUEST_KEYS if _echoable(raw.get(key))}


def _echoable(value: object) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_ECHO_CHARS
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53


def parse_browser_message(body: str | None) -> BrowserMessage:
    """The browser's JSON message as a typed action; BadRequest / ValidationFailed otherwise."""
    raw = parse_json(body or "", "message")
    if not isinstance(raw, dict):
        raise BadRequest("message must be a JSON object")
    action = raw.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise BadRequest(
            f"unknown action {action[:64]!r}"
            if isinstance(action, str)
            else ("missing action" if action is None else "action must be a string"),
            details="valid actions: " + ", ".join(sorted(ACTIONS)),
        )
    try:
        return _BROWSER_MESSAGE.validate_python(raw)
    except PydanticValidationError as e:
        # The path's first part is the union's tag (the action).
        raise ValidationFailed(f"invalid {action} message", fields=field_problems(e, 1)) from e
