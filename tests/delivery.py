"""What one subscriber received, checked the way a browser applies it.

A subscriber's messages of one stream must cover seq 0..end without a gap or an overlap:
each message covers `[firstSeq ?? seq, seq]` (lanes merge a backlog of deltas), and a
catch-up `snapshot` (a connection that joined mid-stream) stands for everything up to its
`seq`. Applying them in arrival order must give exactly the stream's text and one `end`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Delivery:
    text: str = ""
    thinking: str = ""
    last_seq: int = -1
    ends: int = 0
    types: list[str] = field(default_factory=list)
    end: dict[str, Any] | None = None


def replay(messages: list[dict[str, Any]]) -> Delivery:
    """Apply one stream's messages in arrival order; AssertionError on a gap or overlap."""
    state = Delivery()
    parts: dict[int, str] = {}
    for message in messages:
        kind = message["type"]
        if kind == "snapshot":
            if message.get("parts", 1) > 1:
                parts[message["part"]] = message["content"]
                if len(parts) < message["parts"]:
                    continue
                content = "".join(parts[i] for i in range(message["parts"]))
                parts.clear()
            else:
                content = message["content"]
            assert message["seq"] >= state.last_seq, f"snapshot went back: {message['seq']}"
            state.text, state.last_seq = content, message["seq"]
            state.types.append("snapshot")
            continue
        first = message.get("firstSeq", message["seq"])
        assert first == state.last_seq + 1, (
            f"seq {first}..{message['seq']} after {state.last_seq}: gap or overlap"
        )
        assert state.ends == 0, f"{kind} after end"
        state.last_seq = message["seq"]
        state.types.append(kind)
        if kind == "delta":
            state.text += message["content"]
        elif kind == "thinking":
            state.thinking += message["content"]
        elif kind == "end":
            state.ends += 1
            state.end = message
    return state


def assert_complete(messages: list[dict[str, Any]], text: str) -> Delivery:
    """The subscriber ended with exactly `text`, contiguous seq, and one `end` last."""
    state = replay(messages)
    assert state.ends == 1, f"{state.ends} ends; types {state.types[-5:]}"
    assert state.text == text, f"text differs: {state.text[:80]!r}... vs {text[:80]!r}..."
    return state


def covered(messages: list[dict[str, Any]]) -> list[int]:
    """Every seq the messages carry, in arrival order (a merged message carries several)."""
    seqs: list[int] = []
    for message in messages:
        if message["type"] == "snapshot":
            continue
        seqs.extend(range(message.get("firstSeq", message["seq"]), message["seq"] + 1))
    return seqs
