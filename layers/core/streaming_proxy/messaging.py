"""Klai's messaging send: one JSON message to channels, through the streams' envelope and
fan-out, so a backend can reach the same browsers without an LLM."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .blocking import dependency_error
from .channels.publisher import ChannelPublisher
from .envelopes import MAX_MESSAGE_BYTES, encode, json_width
from .errors import PayloadTooLarge, ProxyError

# What the caller is told is unavailable when membership cannot be read.
CONNECTIONS = "the connection store (DynamoDB)"

MESSAGE_TYPE = "message"  # one of envelopes.LAST_TYPES: membership is read once


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(16)


def message_envelope(message_id: str, action_name: str, message: Any) -> dict[str, Any]:
    """A stream of one: `seq` 0, `type: "message"`, the message as given; no `end` follows."""
    return {
        "actionName": action_name,
        "streamId": message_id,
        "seq": 0,
        "type": MESSAGE_TYPE,
        "message": message,
    }


def check_size(envelope: dict[str, Any], channels: Sequence[str]) -> None:
    """413 when the envelope, labelled with any of the target channels, would not fit one
    WebSocket message: API Gateway refuses it, and a message cannot be split as text is.
    Each label is measured as it is sent, JSON-escaped (a `"` takes two bytes there)."""
    unlabelled = len(encode({**envelope, "channel": ""}))
    label = max(json_width(channel) for channel in channels)
    size = unlabelled + label
    if size > MAX_MESSAGE_BYTES:
        raise PayloadTooLarge(
            f"message is {size} bytes in its envelope; a WebSocket message holds at most "
            f"{MAX_MESSAGE_BYTES}"
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one publish reached: connections found on the channels, posts that arrived,
    connections it could not reach (retries exhausted) and connections found closed."""

    message_id: str
    subscribers: int
    delivered: int
    failed: int
    gone: int


async def publish(publisher: ChannelPublisher, envelope: dict[str, Any]) -> Delivery:
    """Post `envelope` to every member of the publisher's channels; returns once every post
    has succeeded or failed for good (or the drain time ran out)."""
    try:
        await publisher.start()
    except ProxyError:
        raise
    except Exception as e:
        unavailable = dependency_error(e, CONNECTIONS)
        if unavailable is None:
            raise
        raise unavailable from e
    try:
        await publisher.send(envelope)
    finally:
        await publisher.close()
    stats = publisher.stats
    return Delivery(envelope["streamId"], stats.subscribers, stats.posts, stats.failed, stats.gone)
