"""providers.ssedecode.SseDecoder: the events httpx-sse finds in the same bytes, however split."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

from streaming_proxy.providers.ssedecode import SseDecoder

STREAMS = {
    "openai": b'data: {"a":"\xc3\xa9"}\n\ndata: [DONE]\n\n',
    "named": b"event: message_start\ndata: {}\n\n: ping\n\nevent: error\ndata: x\n\n",
    "crlf": b"data: one\r\ndata: two\r\n\r\nid: 7\r\nretry: 30\r\ndata:three\r\n\r\n",
    "cr": b"data: a\rdata:  b\r\revent: e\r\r",
    "fields": b"data\nid: 1\x002\nretry: x\nunknown: y\ndata:\n\n:c\nid: 9\n\n",
    "unfinished": b"data: kept\n\ndata: dropped at the end",
    # Not UTF-8 in a value; a field whose name only starts with "data".
    "broken": b"data: \xff\xfe bad\ndata:\xc3\n\ndatax: no\ndata: yes\n\n",
}


def splits(data: bytes) -> Iterator[list[bytes]]:
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def ours(parts: list[bytes]) -> list[tuple[str, str, str, int | None]]:
    decoder = SseDecoder()
    events = [e for part in parts for e in decoder.feed(part)] + decoder.end()
    return [_fields(e) for e in events]


async def theirs(data: bytes) -> list[tuple[str, str, str, int | None]]:
    async def body() -> AsyncIterator[bytes]:
        yield data

    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())
    return [_fields(e) async for e in EventSource(response).aiter_sse()]


def _fields(e: ServerSentEvent) -> tuple[str, str, str, int | None]:
    return e.event, e.data, e.id, e.retry


@pytest.mark.parametrize("name", list(STREAMS))
async def test_the_same_events_as_httpx_sse_wherever_the_bytes_are_cut(name: str) -> None:
    expected = await theirs(STREAMS[name])
    assert expected  # every sample holds events
    for parts in splits(STREAMS[name]):
        assert ours(parts) == expected, parts


def test_a_multibyte_character_cut_in_two_arrives_whole() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b'data: "\xc3') == []
    (event,) = decoder.feed(b'\xa9"\n\n')
    assert event.data == '"é"'


@pytest.mark.parametrize("body", [STREAMS["openai"], STREAMS["named"], b"\xef\xbb"])
def test_one_bom_at_the_start_is_skipped_wherever_the_bytes_are_cut(body: bytes) -> None:
    """The event-stream rules skip one leading U+FEFF; read as a field name's start, it
    cost a stream its first event. Only at the start: a BOM later is part of its line.
    A body of a BOM's first bytes alone is no event."""
    with_bom = b"\xef\xbb\xbf" + body
    for parts in splits(with_bom):
        assert ours(parts) == ours([body]), parts
    later = b"data: a\n\n\xef\xbb\xbfdata: b\n\n"
    assert [data for _, data, _, _ in ours([later])] == ["a"]
