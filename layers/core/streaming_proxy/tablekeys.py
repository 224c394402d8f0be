"""Key layout of the single table (architecture decision 4), shared by every store."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

CHANNEL = "CHANNEL#"
CONN = "CONN#"
STREAM = "STREAM#"
META = "META"
SNAP = "SNAP#"
TOOL = "TOOL#"

T = TypeVar("T")


def now_epoch() -> int:
    return int(time.time())


def conn_key(connection_id: str) -> dict[str, Any]:
    return {"pk": {"S": CONN + connection_id}, "sk": {"S": META}}


def stream_key(stream_id: str) -> dict[str, Any]:
    return {"pk": {"S": STREAM + stream_id}, "sk": {"S": META}}


def tool_key(tool_call_id: str) -> dict[str, Any]:
    return {"pk": {"S": TOOL + tool_call_id}, "sk": {"S": META}}


def private_channel(connection_id: str) -> str:
    """Every connection is alone in its own channel (Klai behaviour)."""
    return f"tab|{connection_id}"


def membership_items(
    connection_id: str, channels: Iterable[str], expires: int
) -> list[dict[str, Any]]:
    """Forward (by channel) and reverse (by connection) rows for each channel."""
    items: list[dict[str, Any]] = []
    for channel in sorted(set(channels)):
        ttl = {"N": str(expires)}
        items.append(
            {"pk": {"S": CHANNEL + channel}, "sk": {"S": CONN + connection_id}, "expiresAt": ttl}
        )
        items.append(
            {"pk": {"S": CONN + connection_id}, "sk": {"S": CHANNEL + channel}, "expiresAt": ttl}
        )
    return items


def chunked(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
