"""The rules every WebSocket reply keeps (docs/events.md): one reply per message (a snapshot
may come in parts), JSON, of a type that answers the action, refusals shaped as action
errors with a documented code, no secret."""

from __future__ import annotations

import json
from typing import Any

from .ledger import SecretLedger
from .rules import RuleBroken, SecretEchoed

REPLY_TYPES = {
    "subscribe": {"subscribed"},
    "unsubscribe": {"unsubscribed"},
    "ping": {"pong"},
    "stop": {"stopped", "not_found"},
    "resume": {"snapshot", "not_found"},
    "history": {"history", "not_found"},
    "llmToolCallResponse": {"ack"},
}
# docs/events.md, section 3. `internal_error` is documented too, but it is the WebSocket's 500.
ERROR_CODES = {
    "bad_request",
    "invalid_request",
    "unauthorized",
    "forbidden",
    # Tool answers: no such waiting call, answered already, over 64 KB.
    "not_found",
    "conflict",
    "payload_too_large",
}
ENVELOPE_TYPES = {"threadInfo", "delta", "thinking", "function_call", "llmToolCall", "end"}


class NoReply(RuleBroken):
    """A message left unanswered within REPLY_TIMEOUT."""


class ConnectionLost(RuleBroken):
    """The connection closed after a message."""


class NotRefused(RuleBroken):
    """A frame API Gateway refuses (over 32 KB, binary) did not close the connection."""


class ExtraReplies(RuleBroken):
    """More than one reply to one message (other than the parts of one snapshot)."""


class GatewayError(RuleBroken):
    """API Gateway's `{"message": "Internal server error"}`: the route itself failed."""


class MalformedReply(RuleBroken):
    """A reply that is not JSON, not the documented shape, or of a type that does not answer."""


class InternalErrorReply(RuleBroken):
    """An action error with code `internal_error`: the WebSocket's 500."""


def parse_reply(raw: str) -> dict[str, Any]:
    try:
        reply = json.loads(raw)
    except ValueError:
        raise MalformedReply(f"reply is not JSON: {raw[:200]!r}") from None
    if not isinstance(reply, dict):
        raise MalformedReply(f"reply is not a JSON object: {raw[:200]!r}")
    if reply.get("message") == "Internal server error":
        raise GatewayError(f"API Gateway's integration failure came back: {reply}")
    return reply


def _is_stream_envelope(message: dict[str, Any]) -> bool:
    kind = message.get("type")
    return kind in ENVELOPE_TYPES or (kind == "error" and "streamId" in message)


def action_of(frame: str) -> str | None:
    """The action a frame names, when it is a JSON object with a string `action`."""
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    action = message.get("action") if isinstance(message, dict) else None
    return action if isinstance(action, str) else None


def check_error(reply: dict[str, Any]) -> None:
    """`{"type": "error", "error": {"message", "code", "details", "type"}}` (Klai's types:
    `code` a number, `details` a string), without a stream's `streamId`/`seq`."""
    error = reply.get("error")
    if not isinstance(error, dict) or "streamId" in reply or "seq" in reply:
        raise MalformedReply(f"not an action error: {reply}")
    if error.get("type") == "internal_error":
        raise InternalErrorReply(f"the message broke the route: {error}")
    if not isinstance(error.get("message"), str) or error.get("type") not in ERROR_CODES:
        raise MalformedReply(f"action error needs a message and a documented type: {error}")
    if type(error.get("code")) is not int or not isinstance(error.get("details"), str):
        raise MalformedReply(f"action error needs a numeric code and string details: {error}")


# Replies that may come in parts: a snapshot (one `seq`) and a thread's history page.
SPLIT_TYPES = {"snapshot", "history"}


def check_snapshot_parts(replies: list[dict[str, Any]]) -> None:
    """A split snapshot or history page: parts 0..parts-1 in order, of one type and one
    `seq` (or `threadId`), nothing else in between."""
    parts = replies[0].get("parts")
    numbered = [reply.get("part") for reply in replies]
    same_seq = {(reply.get("type"), reply.get("seq"), reply.get("threadId")) for reply in replies}
    if (
        any(reply.get("type") not in SPLIT_TYPES for reply in replies)
        or numbered != list(range(len(replies)))
        or parts != len(replies)
        or len(same_seq) != 1
    ):
        raise ExtraReplies(f"{len(replies)} replies are not the parts of one snapshot")


def check_replies(frame: str, received: list[str], ledger: SecretLedger) -> None:
    """What came back for `frame` (stream envelopes aside) is one reply, or one snapshot's
    parts, shaped as docs/events.md says and free of secrets."""
    leaked = ledger.leaked_in("\n".join(received))
    if leaked:
        raise SecretEchoed(f"reply carries {leaked}")
    replies = [reply for reply in map(parse_reply, received) if not _is_stream_envelope(reply)]
    if not replies:
        raise NoReply("the message got no reply before the next one's")
    if len(replies) > 1:
        check_snapshot_parts(replies)
    reply = replies[0]
    kind = reply.get("type")
    if kind == "error":
        check_error(reply)
    action = action_of(frame)
    if action in REPLY_TYPES:
        if kind != "error" and kind not in REPLY_TYPES[action]:
            raise MalformedReply(f"a {kind!r} reply does not answer {action!r}")
    elif kind != "error" or reply["error"]["type"] != "bad_request":
        raise MalformedReply(f"a message without a known action is a bad_request: {reply}")
