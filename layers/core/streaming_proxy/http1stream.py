"""HTTP/1.1 answers read incrementally, body pieces as they come: a strict pure parser.

The provider transport's (nethttp.py) reading half. Unlike `channels/http1.py`, which keeps
small whole answers for the poster, this one hands the body on piece by piece (an SSE
stream may last minutes) and keeps at most one unfinished framing line. It accepts what a
well-behaved server sends: a status line, header fields without obsolete folding, a body
framed by Content-Length, by chunked transfer coding or by the closing of the connection,
interim 1xx answers skipped. Anything else is a `ProtocolError`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .channels.http1 import MAX_HEAD_BYTES, ProtocolError, content_length

__all__ = ["MAX_HEAD_BYTES", "AnswerParser", "ProtocolError", "ResponseHead"]

# Header fields: a token, a colon, a value with no CR or LF (so no obsolete line folding).
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n]*?)[ \t]*")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n]*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
# A chunk-size line (hex digits and extensions) longer than this is not a chunk-size line.
_MAX_CHUNK_LINE = 1024

# Body framings, and the states of a chunked one.
_SIZED, _CHUNKED, _TO_CLOSE = 0, 1, 2
_SIZE, _DATA, _CRLF, _TRAILERS = 0, 1, 2, 3


class ResponseHead(NamedTuple):
    """Status, reason phrase and header fields (raw, in order, repeats kept)."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]


class AnswerParser:
    """The bytes of one answer in, its head and then its body pieces out.

    After `feed`, `head` is set once the final head arrived, `take()` returns the body bytes
    decoded so far, and `done` says the body is complete. `keep_alive` (read when done) says
    whether the connection may carry another request. `end()` is called when the peer closes.
    """

    def __init__(self, *, head_request: bool = False) -> None:
        self._head_request = head_request  # the answer to HEAD has no body, whatever it says
        self._buffer = b""
        self._pieces: list[bytes] = []
        self._framing = _SIZED
        self._state = _SIZE
        self._left = 0  # bytes of the body (Content-Length) or of the current chunk
        self.head: ResponseHead | None = None
        self.done = False
        self.keep_alive = True

    @property
    def buffered(self) -> int:
        """Body bytes decoded and not yet taken."""
        return sum(map(len, self._pieces))

    def take(self) -> bytes:
        """The body bytes decoded since the last call (b"" if none)."""
        pieces = self._pieces
        if not pieces:
            return b""
        self._pieces = []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def feed(self, data: bytes) -> None:
        """Take more bytes of the connection. Raises `ProtocolError`."""
        if self.done:
            # A server answers only what was asked: more bytes mean the framing is not what
            # it claims, so this connection is not trusted with another request.
            self.keep_alive = False
            return
        buffer = self._buffer + data if self._buffer else data
        if self.head is None:
            buffer = self._read_heads(buffer)
            if self.head is None:
                self._buffer = buffer
                return
        if self._framing == _CHUNKED:
            buffer = self._read_chunked(buffer)
        elif self._framing == _SIZED:
            buffer = self._read_sized(buffer)
        else:
            self._pieces.append(buffer)
            buffer = b""
        if self.done and buffer:
            self.keep_alive = False
            buffer = b""
        self._buffer = buffer

    def end(self) -> None:
        """The peer closed: fine for a body that runs to the close, else `ProtocolError`."""
        if self.done:
            return
        if self.head is not None and self._framing == _TO_CLOSE:
            self.done, self.keep_alive = True, False
            return
        where = "inside the answer" if self.head is not None or self._buffer else "before it"
        raise ProtocolError(f"the server closed the connection {where}")

    # -- head -----------------------------------------------------------------------------

    def _read_heads(self, buffer: bytes) -> bytes:
        """Parse heads while whole ones are here, skipping interim (1xx) answers."""
        while self.head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD_BYTES:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError("the head of the answer is too large")
                return buffer
            lines = buffer[:end].split(b"\r\n")
            buffer = buffer[end + 4 :]
            status = _STATUS.fullmatch(lines[0])
            if status is None:
                raise ProtocolError("the status line of the answer is malformed")
            code = int(status[2])
            if code == 101:
                raise ProtocolError("the server switched protocols")
            if code >= 200:
                headers = [_field(line) for line in lines[1:]]
                self.head = ResponseHead(code, status[3] or b"", headers)
                self._start_body(code, headers, http10=status[1] == b"0")
        return buffer

    def _start_body(self, status: int, headers: list[tuple[bytes, bytes]], *, http10: bool) -> None:
        values: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            values.setdefault(name.lower(), []).append(value)
        tokens = {t.strip().lower() for v in values.get(b"connection", ()) for t in v.split(b",")}
        self.keep_alive = b"keep-alive" in tokens if http10 else b"close" not in tokens
        codings = b",".join(values.get(b"transfer-encoding", ()))
        lengths = b",".join(values.get(b"content-length", ()))
        if self._head_request or status in (204, 304):
            self._finish()
        elif codings:
            if lengths:
                self.keep_alive = False  # both framings: smuggling-shaped, never reuse
            if codings.lower().rsplit(b",", 1)[-1].strip() == b"chunked":
                self._framing, self._state = _CHUNKED, _SIZE
            else:
                self._framing, self.keep_alive = _TO_CLOSE, False  # RFC 9112 6.3
        elif lengths:
            self._left = content_length(lengths.decode("latin-1"))
            if not self._left:
                self._finish()
        else:
            self._framing, self.keep_alive = _TO_CLOSE, False

    # -- body -----------------------------------------------------------------------------

    def _read_sized(self, buffer: bytes) -> bytes:
        if len(buffer) < self._left:
            self._left -= len(buffer)
            self._pieces.append(buffer)
            return b""
        self._pieces.append(buffer[: self._left])
        rest = buffer[self._left :]
        self._finish()
        return rest

    def _read_chunked(self, buffer: bytes) -> bytes:
        """Decode every whole framing element in `buffer`; return what is left of it."""
        pos, size = 0, len(buffer)
        while pos < size and not self.done:
            state = self._state
            if state == _DATA:
                take = min(self._left, size - pos)
                self._pieces.append(buffer[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _CRLF
            elif state == _SIZE:
                end = buffer.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > _MAX_CHUNK_LINE:
                        raise ProtocolError("a chunk-size line is too long")
                    break
                found = _CHUNK_SIZE.fullmatch(buffer, pos, end)
                if found is None:
                    raise ProtocolError("a chunk size is not a hexadecimal number")
                pos, self._left = end + 2, int(found[1], 16)
                self._state = _DATA if self._left else _TRAILERS
            elif state == _CRLF:
                if size - pos < 2:
                    break
                if buffer[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("a chunk does not end with CRLF")
                pos += 2
                self._state = _SIZE
            else:
                pos = self._read_trailers(buffer, pos)
                if not self.done:
                    break
        return buffer[pos:] if pos else buffer

    def _read_trailers(self, buffer: bytes, pos: int) -> int:
        """Trailer fields are checked and dropped, up to the empty line that ends the answer."""
        if buffer.startswith(b"\r\n", pos):
            self._finish()
            return pos + 2
        end = buffer.find(b"\r\n\r\n", pos)
        if end < 0:
            if len(buffer) - pos > MAX_HEAD_BYTES:
                raise ProtocolError("the trailers of the answer are too large")
            return pos
        for line in buffer[pos:end].split(b"\r\n"):
            _field(line)
        self._finish()
        return end + 4

    def _finish(self) -> None:
        self.done = True


def _field(line: bytes) -> tuple[bytes, bytes]:
    found = _FIELD.fullmatch(line)
    if found is None:
        raise ProtocolError("a header field of the answer is malformed")
    return found[1], found[2]
