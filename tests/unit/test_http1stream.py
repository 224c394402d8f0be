"""http1stream.AnswerParser: heads and body pieces from bytes split anywhere, and every refusal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streaming_proxy.http1stream import MAX_HEAD_BYTES, AnswerParser, ProtocolError

SSE = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nSet-Cookie: a=1\r\n"
    b"set-cookie: b=2\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'5;ext=1\r\ndata:\r\nE\r\n {"x": "\xc3\xa9"}\n\n\r\n'
    b"0\r\nX-Trailer: yes\r\n\r\n"
)
SIZED = b"HTTP/1.1 404 Not Found\r\nContent-Length: 15\r\n\r\n" + b'{"error":"nay"}'


def splits(data: bytes) -> Iterator[list[bytes]]:
    """`data` whole, byte by byte, and cut in two at every position."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def body_of(parts: list[bytes], parser: AnswerParser) -> bytes:
    body = b""
    for part in parts:
        parser.feed(part)
        body += parser.take()
    return body


@pytest.mark.parametrize("parts", list(splits(SSE)), ids=lambda p: str(len(p)))
def test_a_chunked_stream_split_anywhere(parts: list[bytes]) -> None:
    parser = AnswerParser()
    assert body_of(parts, parser) == b'data: {"x": "\xc3\xa9"}\n\n'
    assert parser.head is not None and parser.head.status == 200
    assert parser.head.headers == [
        (b"Content-Type", b"text/event-stream"),
        (b"Set-Cookie", b"a=1"),
        (b"set-cookie", b"b=2"),  # repeats kept, in order
        (b"Transfer-Encoding", b"chunked"),
    ]
    assert parser.done and parser.keep_alive


@pytest.mark.parametrize("parts", list(splits(SIZED)), ids=lambda p: str(len(p)))
def test_a_content_length_body_split_anywhere(parts: list[bytes]) -> None:
    parser = AnswerParser()
    assert body_of(parts, parser) == b'{"error":"nay"}'
    assert parser.head is not None and (parser.head.status, parser.head.reason) == (
        404,
        b"Not Found",
    )
    assert parser.done and parser.keep_alive


def test_body_pieces_come_out_as_they_arrive_not_at_the_end() -> None:
    parser = AnswerParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
    assert (parser.take(), parser.done) == (b"first\n", False)
    parser.feed(b"3\r\nab")
    assert parser.take() == b"ab"  # half a chunk is handed on too
    parser.feed(b"c\r\n0\r\n\r\n")
    assert (parser.take(), parser.done) == (b"c", True)


def test_a_body_that_runs_to_the_close() -> None:
    parser = AnswerParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome")
    parser.feed(b" bytes")
    assert not parser.done
    parser.end()
    assert (parser.take(), parser.done, parser.keep_alive) == (b"some bytes", True, False)


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nextra", False),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
            False,
        ),
    ],
)
def test_which_answers_leave_the_connection_reusable(head: bytes, keep_alive: bool) -> None:
    parser = AnswerParser()
    parser.feed(head)
    assert parser.done and parser.keep_alive is keep_alive


def test_the_answer_to_head_has_no_body_whatever_its_length_says() -> None:
    parser = AnswerParser(head_request=True)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert parser.done and parser.keep_alive and parser.take() == b""


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000,
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD_BYTES,
    ],
    ids=[
        "version",
        "status",
        "upgrade",
        "field",
        "folding",
        "lengths",
        "length",
        "size",
        "crlf",
        "size-line",
        "head-size",
    ],
)
def test_malformed_answers_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        AnswerParser().feed(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    ],
)
def test_a_close_before_the_answer_ends_is_an_error(data: bytes) -> None:
    parser = AnswerParser()
    parser.feed(data)
    with pytest.raises(ProtocolError):
        parser.end()
