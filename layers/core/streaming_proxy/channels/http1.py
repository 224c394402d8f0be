"""HTTP/1.1 answers read from raw bytes: a strict, minimal, pure parser (no I/O, no clock).

Made for one client sending small requests to one server it trusts to speak HTTP well (the
API Gateway management API): status line, headers, a body framed by Content-Length, by
chunked transfer coding or by the closing of the connection, and interim 1xx answers
skipped. Anything else is a `ProtocolError`, and the connection it came on is dropped.
h11 does the same for any peer, but its ~0.05 ms per request and answer is a third of the
0.15 ms a whole post may cost (`benchmarks/post_cost.py`): hence this one.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "Answer",
    "ProtocolError",
    "ResponseParser",
    "content_length",
]

# The head of an answer (status line and headers) may not be larger than this.
MAX_HEAD_BYTES = 32 * 1024
# Bodies are kept up to this size; a larger one is cut there and its connection dropped, so
# an error page of megabytes is never buffered whole (AWS's own error bodies are tiny).
MAX_BODY_BYTES = 64 * 1024
# A chunk-size line (hex digits and extensions) longer than this is not a chunk-size line.
_MAX_CHUNK_LINE = 1024
# Header fields: a token, a colon, a value with no CR or LF (so no obsolete line folding).
_FIELDS = rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n]*\r\n)*)\r\n"
# A whole head, validated in one match: status line (the reason may be empty), fields.
_HEAD = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?\r\n" + _FIELDS)
_TRAILERS = re.compile(_FIELDS)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")


class ProtocolError(ConnectionError):
    """The bytes on a connection are not a whole, well-formed HTTP/1.x answer."""


class Answer(NamedTuple):
    """One final answer: status, headers (names lower-case, repeats joined by ', '), body.

    `truncated` says the body was longer than the parser keeps: `body` is its beginning.
    """

    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool = False


class ResponseParser:
    """Turns the bytes of one connection into answers, one at a time.

    `feed` returns the answer its bytes complete (else None); `end` is called when the peer
    closes. After an answer, `keep_alive` says whether the connection may carry another
    request: not after `Connection: close`, an HTTP/1.0 answer, a body framed by the close,
    a cut body, or bytes beyond the answer.
    """

    def __init__(self, max_body: int = MAX_BODY_BYTES) -> None:
        self._max_body = max_body
        self._buffer = b""
        self._head: tuple[int, dict[str, str]] | None = None
        self._body: list[bytes] = []
        self._kept = 0
        # Bytes of the body (or of the current chunk) still to read; -1: until the close.
        self._remaining = 0
        self._chunked = False
        self._chunk_state = "size"  # size | data | crlf | trailers
        self.keep_alive = True

    @property
    def idle(self) -> bool:
        """No byte of an unfinished answer is held."""
        return not self._buffer and self._head is None

    def feed(self, data: bytes) -> Answer | None:
        """Take more bytes; return the answer they complete. Raises `ProtocolError`."""
        self._buffer = self._buffer + data if self._buffer else data
        while self._head is None:
            if not self._read_head():
                return None
        answer = self._read_chunked() if self._chunked else self._read_sized()
        if answer is not None and self._buffer:
            # A server answers only what was asked: more bytes mean the framing is not what
            # it claims, so this connection is not trusted with another request.
            self.keep_alive, self._buffer = False, b""
        return answer

    def end(self) -> Answer:
        """The peer closed: the answer whose body ran to the close, else `ProtocolError`."""
        if self._head is not None and self._remaining == -1:
            return self._finish(truncated=False)
        what = "inside an answer" if not self.idle else "before an answer"
        raise ProtocolError(f"the connection closed {what}")

    # -- head ---------------------------------------------------------------------------------

    def _read_head(self) -> bool:
        """Parse the head if it is all here; skip interim (1xx) answers."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ProtocolError("the head of the answer is too large")
            return False
        if end > MAX_HEAD_BYTES:
            raise ProtocolError("the head of the answer is too large")
        head = _HEAD.match(self._buffer, 0, end + 4)
        if head is None:
            raise ProtocolError("the head of the answer is malformed")
        self._buffer = self._buffer[end + 4 :]
        status = int(head[2])
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("the server switched protocols")
            return True  # an interim answer: the final one follows
        self._start_body(status, _headers(head[3]), http10=head[1] == b"0")
        return True

    def _start_body(self, status: int, headers: dict[str, str], *, http10: bool) -> None:
        self._head = (status, headers)
        connection = headers.get("connection")
        tokens = {t.strip() for t in connection.lower().split(",")} if connection else set()
        self.keep_alive = "keep-alive" in tokens if http10 else "close" not in tokens
        coding = headers.get("transfer-encoding")
        if status in (204, 304):
            self._remaining = 0
        elif coding is not None:
            if coding.lower().rsplit(",", 1)[-1].strip() != "chunked":
                self._remaining = -1  # RFC 9112 6.3: read until the close
            else:
                self._chunked, self._chunk_state = True, "size"
            if "content-length" in headers:
                self.keep_alive = False  # both framings: smuggling-shaped, never reuse
        elif "content-length" in headers:
            self._remaining = content_length(headers["content-length"])
        else:
            self._remaining = -1
        if self._remaining == -1:
            self.keep_alive = False

    # -- body ---------------------------------------------------------------------------------

    def _read_sized(self) -> Answer | None:
        """A Content-Length body, or one that runs to the close (`_remaining == -1`)."""
        if self._take_body():
            return self._finish(truncated=True)
        return self._finish(truncated=False) if self._remaining == 0 else None

    def _read_chunked(self) -> Answer | None:
        while True:
            if self._chunk_state == "size":
                if not self._read_chunk_size():
                    return None
            elif self._chunk_state == "data":
                if self._take_body():
                    return self._finish(truncated=True)
                if self._remaining:
                    return None
                self._chunk_state = "crlf"
            elif self._chunk_state == "crlf":
                if len(self._buffer) < 2:
                    return None
                if self._buffer[:2] != b"\r\n":
                    raise ProtocolError("a chunk does not end with CRLF")
                self._buffer, self._chunk_state = self._buffer[2:], "size"
            else:
                return self._read_trailers()

    def _take_body(self) -> bool:
        """Move body bytes (up to `_remaining`, or all when -1) out of the buffer; True when
        the body passed the cap (the rest of the buffer is then dropped with the connection)."""
        if self._remaining == -1:
            taken, self._buffer = self._buffer, b""
        else:
            taken = self._buffer[: self._remaining]
            self._buffer = self._buffer[len(taken) :]
            self._remaining -= len(taken)
        if taken and self._kept <= self._max_body:
            self._body.append(taken)
            self._kept += len(taken)
        if self._kept > self._max_body:
            self._buffer = b""
            return True
        return False

    def _read_chunk_size(self) -> bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_CHUNK_LINE:
                raise ProtocolError("a chunk-size line is too long")
            return False
        size = _CHUNK_SIZE.fullmatch(self._buffer, 0, end)
        if size is None:
            raise ProtocolError("a chunk size is not a hexadecimal number")
        self._buffer = self._buffer[end + 2 :]
        self._remaining = int(size[1], 16)
        self._chunk_state = "data" if self._remaining else "trailers"
        return True

    def _read_trailers(self) -> Answer | None:
        """Trailer fields are checked and dropped, up to the empty line that ends the answer."""
        if self._buffer.startswith(b"\r\n"):
            end = 2
        else:
            found = self._buffer.find(b"\r\n\r\n")
            if found < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError("the trailers of the answer are too large")
                return None
            end = found + 4
        if _TRAILERS.fullmatch(self._buffer, 0, end) is None:
            raise ProtocolError("the trailers of the answer are malformed")
        self._buffer = self._buffer[end:]
        return self._finish(truncated=False)

    def _finish(self, *, truncated: bool) -> Answer:
        assert self._head is not None
        status, headers = self._head
        body = b"".join(self._body)
        if truncated:
            self.keep_alive = False
            body = body[: self._max_body]
        self._head, self._body, self._kept, self._remaining = None, [], 0, 0
        self._chunked = False
        return Answer(status, headers, body, truncated)


def _headers(fields: bytes) -> dict[str, str]:
    """Validated header lines as a dict: names lower-case, values trimmed, repeats joined."""
    headers: dict[str, str] = {}
    for line in fields.decode("latin-1").split("\r\n")[:-1]:
        name, _, value = line.partition(":")
        name, value = name.lower(), value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def content_length(value: str) -> int:
    """A Content-Length value as a number; `ProtocolError` if it is not one."""
    # Repeats arrive joined ('5, 5'): allowed only when they agree (RFC 9110 8.6).
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1:
        raise ProtocolError("conflicting Content-Length values")
    (number,) = values
    if not number.isdigit() or not number.isascii() or len(number) > 18:
        raise ProtocolError("Content-Length is not a number")
    return int(number)
