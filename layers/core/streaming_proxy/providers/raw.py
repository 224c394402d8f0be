"""The provider's own frames, kept for `options.rawResponse` (a `stream:false` caller's
`data.raw_response`).

The proxy always streams from the provider, so the provider's "raw response" is what it
streamed: each native frame (the JSON of an SSE event, or one Bedrock ConverseStream event),
in arrival order, one list per call to the provider (a tool loop calls it once per round).
Recording is on only inside `recording()`; adapters tap their frames with `record_frame`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from httpx_sse import ServerSentEvent

from ..redact import scrub
from ..textcheck import model_json

# A long answer streams thousands of frames; the answer stays bounded, and says it was cut.
MAX_RAW_BYTES = 1_048_576


@dataclass
class RawFrames:
    """The frames of one stream: `rounds[n]` holds what call n to the provider streamed."""

    provider: str
    rounds: list[list[Any]] = field(default_factory=list)
    truncated: bool = False
    _size: int = 0

    def begin(self) -> None:
        """A new call to the provider starts (its frames go to a list of their own)."""
        self.rounds.append([])

    def add(self, text: str) -> None:
        """One frame as the provider sent it (JSON text; anything else is kept as text)."""
        if self.truncated or not text or text == "[DONE]":
            return
        # Bytes, as the cap says: text of 4-byte characters would otherwise keep 4 MiB.
        self._size += len(text.encode("utf-8", "surrogatepass"))
        if self._size > MAX_RAW_BYTES:
            self.truncated = True
            return
        if not self.rounds:
            self.begin()
        # Scrubbed like everything else the proxy says: a careless upstream may echo a key.
        clean = scrub(text)
        try:
            self.rounds[-1].append(model_json(clean))
        except ValueError:
            self.rounds[-1].append(clean)

    def as_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "rounds": self.rounds, "truncated": self.truncated}


_CURRENT: ContextVar[RawFrames | None] = ContextVar("raw_frames", default=None)


@contextmanager
def recording(provider: str) -> Iterator[RawFrames]:
    """Record every frame the provider streams while the block runs (tasks it starts too)."""
    frames = RawFrames(provider)
    token = _CURRENT.set(frames)
    try:
        yield frames
    finally:
        _CURRENT.reset(token)


def begin_round() -> None:
    """A call to the provider opens its stream (no-op when nothing records)."""
    frames = _CURRENT.get()
    if frames is not None:
        frames.begin()


def record_frame(frame: Any) -> None:
    """One native frame: SSE data text, or a decoded event (Bedrock's dicts, bytes inside)."""
    frames = _CURRENT.get()
    if frames is None:
        return
    text = frame if isinstance(frame, str) else json.dumps(frame, default=_bytes_as_base64)
    frames.add(text.strip())


def tapped(
    events: AsyncGenerator[ServerSentEvent, None],
) -> AsyncGenerator[ServerSentEvent, None]:
    """`events`, each one's data recorded on the way through; `events` itself when nothing
    records (every stream but `rawResponse` ones: no extra step per chunk)."""
    frames = _CURRENT.get()
    if frames is None:
        return events
    frames.begin()
    return _recorded(events)


async def _recorded(
    events: AsyncIterator[ServerSentEvent],
) -> AsyncGenerator[ServerSentEvent, None]:
    async for event in events:
        record_frame(event.data)
        yield event


def _bytes_as_base64(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return str(value)
