"""The provider's own frames, kept for `options.rawResponse` (a `stream:false` caller's
`data.raw_response`).

The proxy always streams from the provider, so the provider's "raw response" is what it
streamed: each native frame (the JSON of an SSE event, or one Bedrock ConverseStream event),
in arrival order, one list per call to the provider (a tool loop calls it once per round).
Recording is on only inside `recording()`; adapters tap their frames with `record_frame`.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from httpx_sse import ServerSentEvent
from pydantic import SecretStr

from ..redact import REDACTED, scrub
from ..textcheck import model_json
from ..textguard import secret_spans

# A long answer streams thousands of frames; the answer stays bounded, and says it was cut.
MAX_RAW_BYTES = 1_048_576


@dataclass
class RawFrames:
    """The frames of one stream: `rounds[n]` holds what call n to the provider streamed, as
    it came; `as_json` gives them cleaned of secrets."""

    provider: str
    rounds: list[list[Any]] = field(default_factory=list)
    truncated: bool = False
    # The stream's own provider key (`payload.apiKey`): kept out as the process's keys are.
    own_key: str | SecretStr | None = None
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
        try:
            self.rounds[-1].append(model_json(text))
        except ValueError:
            self.rounds[-1].append(text)

    def as_json(self) -> dict[str, Any]:
        rounds = [_cleaned(frames, self.own_key) for frames in self.rounds]
        return {"provider": self.provider, "rounds": rounds, "truncated": self.truncated}


def _cleaned(frames: list[Any], own_key: str | SecretStr | None) -> list[Any]:
    """A call's frames, scrubbed like everything else the proxy says (a careless upstream
    may echo a key). Secrets are looked for in each field's text joined over the frames
    too (every frame's `choices.0.delta.content`, in order, is one text): a model that
    writes a key streams it cut into pieces, and JSON escapes hide it from the frame's
    raw text; those are replaced where they begin and cut out of the pieces after."""
    copies = copy.deepcopy(frames)
    fields: dict[tuple[Any, ...], list[tuple[Any, Any]]] = {}
    for index in range(len(copies)):
        _collect(copies, index, (), fields)
    for places in fields.values():
        _replace_across(places, own_key)
    return [_scrubbed(frame) for frame in copies]


def _scrubbed(frame: Any) -> Any:
    if isinstance(frame, str):
        return scrub(frame)
    clean = scrub(json.dumps(frame))
    try:
        return model_json(clean)
    except ValueError:  # a replacement that took a quote with it: the frame as text
        return clean


def _collect(
    holder: Any, key: Any, path: tuple[Any, ...], fields: dict[tuple[Any, ...], list[Any]]
) -> None:
    """Every string under `holder[key]`, by its path in the frame (where it is kept)."""
    value = holder[key]
    if isinstance(value, str):
        fields.setdefault(path, []).append((holder, key))
    elif isinstance(value, dict):
        for name in value:
            _collect(value, name, (*path, name), fields)
    elif isinstance(value, list):
        for position in range(len(value)):
            _collect(value, position, (*path, position), fields)


def _replace_across(places: list[tuple[Any, Any]], own_key: str | SecretStr | None) -> None:
    """The strings at `places`, read as one text: each secret in it replaced in the piece
    where it begins, its rest cut out of the pieces after."""
    pieces = [holder[key] for holder, key in places]
    joined = "".join(pieces)
    spans = secret_spans(joined, own_key)
    if not spans:
        return
    end = 0
    for (holder, key), piece in zip(places, pieces, strict=True):
        start, end = end, end + len(piece)
        kept: list[str] = []
        at = start
        for first, last in spans:
            if last <= start or first >= end:
                continue
            kept.append(joined[at : max(first, start)])
            if first >= start:
                kept.append(REDACTED)
            at = min(last, end)
        kept.append(joined[at:end])
        holder[key] = "".join(kept)


_CURRENT: ContextVar[RawFrames | None] = ContextVar("raw_frames", default=None)


@contextmanager
def recording(provider: str, own_key: str | SecretStr | None = None) -> Iterator[RawFrames]:
    """Record every frame the provider streams while the block runs (tasks it starts too);
    `own_key`: the stream's own provider key, kept out of them."""
    frames = RawFrames(provider, own_key=own_key)
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
