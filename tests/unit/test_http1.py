"""http1.ResponseParser: every framing, fed whole and split at every byte, and every refusal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streaming_proxy.channels.http1 import MAX_HEAD_BYTES, Answer, ProtocolError, ResponseParser

GONE = (
    b"HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\n"
    b"x-amzn-ErrorType: GoneException\r\nContent-Length: 15\r\n\r\n"
    b'{"message":"x"}'
)
CHUNKED = (
    b"HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n"
    b"7\r\n, world\r\n"
    b"0\r\nX-Trailer: yes\r\n\r\n"
)


def splits(data: bytes) -> Iterator[list[bytes]]:
    """`data` whole, byte by byte, and cut in two at every position."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def feed_all(parts: list[bytes], parser: ResponseParser | None = None) -> Answer:
    parser = parser or ResponseParser()
    answers = [a for a in (parser.feed(part) for part in parts) if a is not None]
    assert len(answers) == 1
    return answers[0]


@pytest.mark.parametrize("parts", list(splits(GONE)), ids=lambda p: str(len(p)))
def test_content_length_answer_split_anywhere(parts: list[bytes]) -> None:
    parser = ResponseParser()
    answer = feed_all(parts, parser)
    assert answer == Answer(
        410,
        {
            "content-type": "application/json",
            "x-amzn-errortype": "GoneException",
            "content-length": "15",
        },
        b'{"message":"x"}',
    )
    assert parser.keep_alive and parser.idle


@pytest.mark.parametrize("parts", list(splits(CHUNKED)), ids=lambda p: str(len(p)))
def test_chunked_answer_split_anywhere(parts: list[bytes]) -> None:
    parser = ResponseParser()
    answer = feed_all(parts, parser)
    assert (answer.status, answer.body) == (502, b"hello, world")
    assert parser.keep_alive and parser.idle


def test_answers_follow_one_another_on_a_kept_connection() -> None:
    parser = ResponseParser()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert [parser.feed(ok), parser.feed(GONE), parser.feed(CHUNKED), parser.feed(ok)] == [
        Answer(200, {"content-length": "0"}, b""),
        feed_all([GONE]),
        feed_all([CHUNKED]),
        Answer(200, {"content-length": "0"}, b""),
    ]


@pytest.mark.parametrize("interim", [b"100 Continue", b"102 Processing", b"103 Early Hints"])
def test_interim_answers_are_skipped(interim: bytes) -> None:
    data = (
        b"HTTP/1.1 "
        + interim
        + b"\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    for parts in splits(data):
        assert feed_all(parts) == Answer(200, {"content-length": "2"}, b"ok")


def test_no_body_after_204_and_304() -> None:
    for status in (b"204 No Content", b"304 Not Modified"):
        parser = ResponseParser()
        answer = parser.feed(b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\n\r\n")
        assert answer is not None and answer.body == b""
        assert parser.keep_alive


def test_a_body_without_length_runs_to_the_close() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 500 Oops\r\n\r\nsomething ") is None
    assert parser.feed(b"broke") is None
    assert parser.end() == Answer(500, {}, b"something broke")
    assert not parser.keep_alive


def test_other_transfer_codings_run_to_the_close() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 502 X\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b") is None
    assert parser.end().body == b"\x1f\x8b"


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\nContent-Length: 0\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n", True),
        # Both framings: chunked wins, and the connection is never trusted again.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n", False),
    ],
)
def test_keep_alive_is_what_the_answer_allows(head: bytes, keep_alive: bool) -> None:
    parser = ResponseParser()
    body = b"0\r\n\r\n" if b"chunked" in head else b""
    assert parser.feed(head + b"\r\n" + body) is not None
    assert parser.keep_alive is keep_alive


def test_bytes_beyond_the_answer_end_the_connection() -> None:
    parser = ResponseParser()
    answer = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert answer is not None and answer.body == b"ok"
    assert not parser.keep_alive


def test_repeated_headers_are_joined_and_equal_lengths_accepted() -> None:
    answer = ResponseParser().feed(
        b"HTTP/1.1 200 OK\r\nVia: a\r\nvia: b\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    )
    assert answer is not None
    assert (answer.headers["via"], answer.body) == ("a, b", b"ok")


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 403", b"HTTP/1.1 403 ", b"HTTP/1.1 403 No"])
def test_header_values_are_trimmed_and_the_reason_may_be_empty(status_line: bytes) -> None:
    answer = ResponseParser().feed(
        status_line + b"\r\nX-A: \t spaced  out \t\r\nX-B:\r\nContent-Length: 0\r\n\r\n"
    )
    assert answer == Answer(403, {"x-a": "spaced  out", "x-b": "", "content-length": "0"}, b"")


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b"Content-Length: 200000\r\n\r\n" + b"x" * 200_000, id="content-length"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n\r\n" + (b"800\r\n" + b"x" * 0x800 + b"\r\n") * 100,
            id="chunked",
        ),
    ],
)
def test_a_large_body_is_cut_and_its_connection_dropped(framing: bytes) -> None:
    parser = ResponseParser(max_body=1000)
    data = b"HTTP/1.1 502 Bad Gateway\r\n" + framing
    fed, answer = 0, None
    while answer is None:
        answer = parser.feed(data[fed : fed + 4096])
        fed += 4096
    assert fed == 4096  # answered once past the cap, not at the end of the body
    assert answer.truncated and (answer.status, answer.body) == (502, b"x" * 1000)
    assert not parser.keep_alive


def test_a_body_to_the_close_is_cut_too() -> None:
    parser = ResponseParser(max_body=10)
    answer = parser.feed(b"HTTP/1.1 500 X\r\n\r\n" + b"y" * 50)
    assert answer is not None and answer.truncated and answer.body == b"y" * 10


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"HTTP/2 200 OK\r\n\r\n", id="http2"),
        pytest.param(b"ICY 200 OK\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 20 OK\r\n\r\n", id="two-digit-status"),
        pytest.param(b"HTTP/1.1 200OK\r\n\r\n", id="no-space-after-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", id="space-in-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", id="no-colon"),
        pytest.param(b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n", id="empty-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", id="obs-fold"),
        pytest.param(b"HTTP/1.1 200 OK\r\nA: b\nC: d\r\n\r\n", id="bare-lf"),
        pytest.param(b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", id="bare-cr"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", id="hex-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", id="two-lengths"),
        pytest.param(b"HTTP/1.1 101 Switching\r\n\r\n", id="switching-protocols"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="chunk-size-not-hex"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXY", id="chunk-no-crlf"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
            id="bad-trailer",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000, id="long-chunk"
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * MAX_HEAD_BYTES, id="huge-head"),
    ],
)
def test_malformed_answers_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(data)


def test_an_endless_head_is_refused_before_it_ends() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ProtocolError, match="too large"):
        for _ in range(MAX_HEAD_BYTES // 10 + 1):
            parser.feed(b"X-Pad: 12\r\n")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Le", id="in-the-head"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", id="in-the-body"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", id="chunk"),
    ],
)
def test_a_close_before_the_answer_ends_is_a_protocol_error(data: bytes) -> None:
    parser = ResponseParser()
    assert parser.feed(data) is None
    with pytest.raises(ProtocolError, match="closed"):
        parser.end()
