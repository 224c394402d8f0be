"""Builds the contract's envelopes `{actionName, streamId, seq, type, ...}` with contiguous seq."""

from __future__ import annotations

import json
from typing import Any

# Room left for the envelope's own fields under API Gateway's 128 KB message limit.
MAX_CONTENT_BYTES = 96 * 1024
# A snapshot above this is split in parts: API Gateway refuses messages over 128 KB.
MAX_SNAPSHOT_MESSAGE_BYTES = 120_000
# The least text one snapshot part carries, whatever its other fields take (at most half
# of the part's size).
MIN_PART_BYTES = 16 * 1024
# API Gateway's limit on one WebSocket message: a published message must fit it whole.
MAX_MESSAGE_BYTES = 128 * 1024
# Types after which a stream sends nothing more: its `end`, or the one `message` a publish is.
LAST_TYPES = frozenset({"end", "message"})


class EnvelopeSequencer:
    """Numbers every message of one stream 0, 1, 2, ... across all event types."""

    def __init__(self, stream_id: str, action_name: str) -> None:
        self.stream_id = stream_id
        self.action_name = action_name
        self.last_seq = -1

    def envelope(self, type_: str, **fields: Any) -> dict[str, Any]:
        self.last_seq += 1
        return {
            "actionName": self.action_name,
            "streamId": self.stream_id,
            "seq": self.last_seq,
            "type": type_,
            **fields,
        }

    def skip(self) -> None:
        """Number a message no sink reads (its seq still counts for the stream's record)."""
        self.last_seq += 1


# The widest a character gets in JSON: a control character or lone surrogate as `\uXXXX`.
MAX_CHAR_WIDTH = 6


def json_width(text: str) -> int:
    """Bytes `text` takes inside a JSON string (UTF-8, escapes counted, no quotes)."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2


def split_text(text: str, max_bytes: int = MAX_CONTENT_BYTES) -> list[str]:
    """Split text into pieces of at most `max_bytes` UTF-8 bytes (JSON-escaped), never
    inside a character, so each piece fits one WebSocket message."""
    # Most text is far below the limit: no encoding at all when even the widest could fit.
    if len(text) * MAX_CHAR_WIDTH + 2 <= max_bytes:
        return [text]
    if json_width(text) + 2 <= max_bytes:
        return [text]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        width = json_width(char)
        if size + width > max_bytes and current:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    if current:
        pieces.append("".join(current))
    return pieces


# `json.dumps(..., ensure_ascii=False, separators=(",", ":"))` without an encoder built per
# call (dumps builds one whenever it is given an option): one per message sent.
_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(message: dict[str, Any]) -> bytes:
    """One WebSocket message: compact JSON, UTF-8 (never raising: inputs are checked at the
    edge and model text repaired, so a lone surrogate here would be a bug, sent as '?')."""
    return _compact_json(message).encode("utf-8", errors="replace")


def snapshot_messages(
    base: dict[str, Any], text: str, max_bytes: int = MAX_SNAPSHOT_MESSAGE_BYTES
) -> list[dict[str, Any]]:
    """A `snapshot` message (`base` plus `content`), split in `part`/`parts` when it would
    pass `max_bytes`; parts are cut on character boundaries."""
    whole = {**base, "content": text}
    if len(encode(whole)) <= max_bytes:
        return [whole]
    # Overhead measured with the widest part numbers the text could need.
    widest = len(text.encode("utf-8"))
    overhead = len(encode({**base, "content": "", "part": widest, "parts": widest}))
    # Never cut the text in crumbs: a base that leaves less room (callers bound theirs) gets
    # parts over `max_bytes` (a lane counts them dropped) rather than one per character.
    floor = min(MIN_PART_BYTES, max_bytes // 2)
    pieces = split_text(text, max(max_bytes - overhead, floor))
    return [
        {**base, "content": piece, "part": i, "parts": len(pieces)}
        for i, piece in enumerate(pieces)
    ]


def fits_message(fields: dict[str, Any]) -> bool:
    """Whether an envelope's own fields leave room for the rest of it in one message."""
    return len(encode(fields)) <= MAX_CONTENT_BYTES


def fitted_function_call(envelope: dict[str, Any]) -> dict[str, Any]:
    """A `function_call` envelope as one WebSocket message can carry it: when its calls'
    arguments together are too large, the largest are left out until it fits, each such
    entry saying how large they were (`arguments: null`, `userMessage: null`,
    `argumentsBytes`). The envelope itself when it fits (nearly always)."""
    content = envelope.get("content")
    if not isinstance(content, dict) or fits_message(content):
        return envelope
    entries = [dict(entry) for entry in content.get("functions", [])]
    sizes = [len(encode({"a": entry.get("arguments")})) - len('{"a":}') for entry in entries]
    for i in sorted(range(len(entries)), key=sizes.__getitem__, reverse=True):
        entries[i].update(userMessage=None, arguments=None, argumentsBytes=sizes[i])
        if fits_message({"functions": entries}):
            break
    return {**envelope, "content": {**content, "functions": entries}}
