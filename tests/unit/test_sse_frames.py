"""An SSE answer ends when its relay ends, whatever the sink or observer did before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from streaming_proxy.api.sse import FrameQueue, KlaiSseSink


async def read_all(queue: FrameQueue, done: asyncio.Future[object]) -> list[bytes]:
    """What the answer writes, in writes (frames queued together go out in one)."""
    return [frame async for frame in queue.frames(30, done)]


async def test_the_answer_ends_with_the_relay_even_if_nothing_closed_it() -> None:
    queue = FrameQueue()

    async def relay() -> None:
        queue.put(b"data: 1\n\n")  # and then, say, an observer raised before closing

    frames = await asyncio.wait_for(read_all(queue, asyncio.ensure_future(relay())), 5)
    assert frames == [b": stream open\n\n", b"data: 1\n\n"]


async def test_frames_put_before_the_relay_ended_all_go_out_in_order() -> None:
    queue = FrameQueue()

    async def relay() -> None:
        for n in range(3):
            queue.put(f"data: {n}\n\n".encode())
            await asyncio.sleep(0)
        queue.end()

    frames = await asyncio.wait_for(read_all(queue, asyncio.ensure_future(relay())), 5)
    assert b"".join(frames[1:]) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_frames_queued_while_the_answer_was_busy_go_out_in_one_write() -> None:
    queue = FrameQueue()

    async def relay() -> None:
        for n in range(3):  # no await between them: the reader cannot take one at a time
            queue.put(f"data: {n}\n\n".encode())
        queue.end()

    frames = await asyncio.wait_for(read_all(queue, asyncio.ensure_future(relay())), 5)
    assert frames == [b": stream open\n\n", b"data: 0\n\ndata: 1\n\ndata: 2\n\n"]


async def test_a_klai_answer_ends_with_its_relay() -> None:
    sink = KlaiSseSink()

    async def relay() -> None:
        await sink.send({"type": "end", "seq": 1})
        await sink.close()  # the relay's sink protocol: must not be what ends the answer

    frames = await asyncio.wait_for(read_all(sink, asyncio.ensure_future(relay())), 5)
    assert frames[1].startswith(b"event: end\ndata: ")


async def test_a_quiet_stream_gets_keep_alives_and_a_busy_one_gets_none() -> None:
    queue = FrameQueue()

    async def relay() -> None:
        await asyncio.sleep(0.13)  # quiet: keep-alives at about 0.05 and 0.10
        for n in range(8):  # busy: a frame every 0.02 s, never 0.05 s of silence
            queue.put(f"data: {n}\n\n".encode())
            await asyncio.sleep(0.02)
        queue.end()

    done = asyncio.ensure_future(relay())
    frames = await asyncio.wait_for(_collect(queue.frames(0.05, done)), 5)
    quiet, busy = frames[1:3], frames[3:]
    assert quiet == [b": keep-alive\n\n"] * 2
    assert busy == [f"data: {n}\n\n".encode() for n in range(8)]


async def _collect(frames: AsyncIterator[bytes]) -> list[bytes]:
    return [frame async for frame in frames]
