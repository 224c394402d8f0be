"""Event-stream answers read frame by frame against the schema docs/openapi.yaml names for a
frame (`x-frame-data`), which no OpenAPI 3.1 tool reads on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

_URN = "urn:streaming-proxy:openapi"


class StreamBroken(AssertionError):
    """An event stream that is not the documented frames, or stops before its last one."""


@dataclass(frozen=True)
class Frame:
    """One server-sent event: its `event:` name (if any) and its joined `data:` lines."""

    event: str | None
    data: str


def read_frames(content: bytes) -> Iterator[Frame]:
    """The events of an SSE body; comments (`: keep-alive`) and empty blocks are skipped."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StreamBroken(f"event stream is not UTF-8: {e}") from e
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if data:
            yield Frame(event, "\n".join(data))


class FrameSchemas:
    """Validators for the frames of each documented event-stream answer."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document
        resource = DRAFT202012.create_resource(dict(document))
        self._registry: Registry[Any] = Registry().with_resource(_URN, resource)

    def validator(self, path: str, method: str, status: int) -> Draft202012Validator | None:
        """The frame validator of one answer, or None when the document names no frame schema
        there (then a tool reading `itemSchema` can check the frames itself)."""
        escaped = path.replace("~", "~0").replace("/", "~1")
        response = self._follow(f"/paths/{escaped}/{method.lower()}/responses/{status}")
        if response is None:
            return None
        stream = self._follow(f"{response}/content/text~1event-stream/schema")
        if stream is None or "x-frame-data" not in self._at(stream):
            return None
        return Draft202012Validator(
            {"$ref": f"{_URN}#{stream}/x-frame-data"}, registry=self._registry
        )

    def _follow(self, pointer: str) -> str | None:
        """`pointer`, after following `$ref`s; None when nothing is there."""
        for _ in range(16):
            node = self._at(pointer)
            if not isinstance(node, dict):
                return None
            ref = node.get("$ref")
            if not isinstance(ref, str):
                return pointer
            pointer = ref.removeprefix("#")
        return None

    def _at(self, pointer: str) -> Any:
        node: Any = self._document
        for part in pointer.removeprefix("/").split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node


def check_frames(validator: Draft202012Validator, content: bytes, *, named: bool) -> None:
    """Every frame matches the documented schema and the stream is complete: Klai streams
    (`named`: `event:` equals the envelope's `type`) end with `end`, OpenAI streams with
    `[DONE]` or an error frame."""
    frames = list(read_frames(content))
    if not frames:
        raise StreamBroken("event stream without a single frame")
    values = [_value(frame) for frame in frames]
    for index, (frame, value) in enumerate(zip(frames, values, strict=True)):
        error = best_match(validator.iter_errors(value))
        if error is not None:
            raise StreamBroken(f"frame {index} breaks the schema: {error.message[:300]}")
        if named and (not isinstance(value, dict) or frame.event != value.get("type")):
            raise StreamBroken(f"frame {index}: `event: {frame.event}` is not its envelope type")
    last = values[-1]
    if named and not (isinstance(last, dict) and last.get("type") == "end"):
        raise StreamBroken(f"Klai stream ends without `end`: {frames[-1].data[:200]}")
    if not named and last != "[DONE]" and not (isinstance(last, dict) and "error" in last):
        raise StreamBroken(f"chunk stream ends without [DONE] or an error: {frames[-1].data[:200]}")


def _value(frame: Frame) -> Any:
    if frame.data == "[DONE]":
        return frame.data
    try:
        return json.loads(frame.data)
    except ValueError as e:
        raise StreamBroken(f"frame data is not JSON: {frame.data[:200]!r}") from e
