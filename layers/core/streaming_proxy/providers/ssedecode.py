"""Server-Sent Events decoded from body bytes: a pure decoder (no I/O), one step per chunk.

What httpx-sse does over `aiter_text` (WHATWG event-stream rules: lines end with CRLF, LF
or CR; `data` lines join with LF; comments and unknown fields ignored; the last event id
kept; an event is dispatched at a blank line, an unfinished one at the end is dropped; one
BOM at the very start skipped),
done on bytes in one place: a provider stream yields once per chunk, and the two generator
layers and two incremental decoders in between cost more than the decoding itself.
"""

from __future__ import annotations

from httpx_sse import ServerSentEvent

__all__ = ["SseDecoder"]

_BOM = b"\xef\xbb\xbf"  # one at the stream's very start is not part of it


class SseDecoder:
    """`feed` body bytes, get the events they complete, in order."""

    def __init__(self) -> None:
        self._rest = b""  # an unfinished line
        self._event = ""
        self._data: list[str] = []
        self._id = ""
        self._retry: int | None = None
        self._at_start = True  # no byte but a BOM's seen yet

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        if self._rest:
            data = self._rest + data
            self._rest = b""
        if self._at_start:
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._rest = data  # maybe a BOM cut by the read: wait for the rest
                return []
            self._at_start = False
            data = data.removeprefix(_BOM)
        if b"\r" in data:
            # A CR at the very end may be half of a CRLF: it waits for the next bytes.
            held = data.endswith(b"\r")
            if held:
                data = data[:-1]
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                data += b"\r"
        *lines, self._rest = data.split(b"\n")
        events: list[ServerSentEvent] = []
        for line in lines:
            if line.startswith(b"data:"):  # nearly every line: its value, decoded alone
                value = line[6:] if line[5:6] == b" " else line[5:]
                self._data.append(value.decode("utf-8", errors="replace"))
                continue
            event = self._line(line.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        return events

    def end(self) -> list[ServerSentEvent]:
        """The body ended: a line ended by a last CR counts (a blank one dispatches)."""
        rest, self._rest = self._rest, b""
        if not rest.endswith(b"\r"):
            return []  # an unfinished line, of an unfinished event: dropped
        event = self._line(rest[:-1].decode("utf-8", errors="replace"))
        return [] if event is None else [event]

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None  # a comment
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._event and not self._data and not self._id and self._retry is None:
            return None
        event = ServerSentEvent(self._event, "\n".join(self._data), self._id, self._retry)
        # The last event id is kept, as the spec says; the rest starts over.
        self._event, self._data, self._retry = "", [], None
        return event
