"""The benchmarks' chunked-coding reader (the SSE client's, and the bare relay's) gives the
data back whole whatever the reads' boundaries: a benchmark that checks text relies on it."""

from __future__ import annotations

import pytest

from benchmarks.sse_client import Dechunker

FRAMES = [b"data: {}\n\n", b"data: " + b"x" * 300 + b"\n\n", b"data: [DONE]\n\n"]
BODY = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(f), f) for f in FRAMES) + b"0\r\n\r\n"


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(BODY)])
def test_every_read_split_gives_the_data_back_and_the_end(size: int) -> None:
    chunks = Dechunker()
    got = b""
    for i in range(0, len(BODY), size):
        got += chunks.feed(BODY[i : i + size])
        assert chunks.done == (i + size >= len(BODY) - 2)  # done at the last chunk's line
    assert got == b"".join(FRAMES)


def test_nothing_is_given_before_a_chunk_is_whole() -> None:
    chunks = Dechunker()
    assert chunks.feed(BODY[:12]) == b"" and not chunks.done
