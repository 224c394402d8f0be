"""The benchmark's bare relay undoes the chunked coding whatever the reads' boundaries."""

from __future__ import annotations

import pytest

from benchmarks.bare_relay import Dechunker

FRAMES = [b"data: {}\n\n", b"data: " + b"x" * 300 + b"\n\n", b"data: [DONE]\n\n"]
BODY = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(f), f) for f in FRAMES) + b"0\r\n\r\n"


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(BODY)])
def test_every_read_split_gives_the_data_back_and_the_end(size: int) -> None:
    chunks = Dechunker()
    got = b""
    for i in range(0, len(BODY), size):
        assert not chunks.done
        got += chunks.feed(BODY[i : i + size])
    assert got == b"".join(FRAMES) and chunks.done


def test_nothing_is_given_before_a_chunk_is_whole() -> None:
    chunks = Dechunker()
    assert chunks.feed(BODY[:12]) == b"" and not chunks.done
