"""An SSE answer ends when its relay ends, whatever the sink or observer did before."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from streaming_proxy.api.app import ProxyApp
from streaming_proxy.api.sse import SERVER_SEND, FrameQueue, KlaiSseSink, SseResponse


async def read_all(
    queue: FrameQueue, done: asyncio.Future[Any], keepalive: float = 30
) -> list[bytes]:
    """What the answer writes, in writes (frames queued together go out in one)."""
    written: list[bytes] = []

    async def emit(data: bytes) -> None:
        written.append(data)

    await queue.write(emit, keepalive, done)
    return written


async def test_the_answer_ends_with_the_relay_even_if_nothing_closed_it() -> None:
    queue = FrameQueue()

    async def relay() -> None:
        queue.put(b"data: 1\n\n")  # and then, say, an observer raised before closing

    frames = await asyncio.wait_for(read_all(queue, asyncio.ensure_future(relay())), 5)
    assert b"".join(frames) == b": stream open\n\ndata: 1\n\n"


async def test_frames_put_before_the_relay_ended_all_go_out_in_order() -> None:
    queue = FrameQueue()

    async def relay() -> None:
        for n in range(3):
            queue.put(f"data: {n}\n\n".encode())
            await asyncio.sleep(0)
        queue.end()

    frames = await asyncio.wait_for(read_all(queue, asyncio.ensure_future(relay())), 5)
    assert b"".join(frames) == b": stream open\n\ndata: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_frames_queued_while_the_answer_was_busy_go_out_in_one_write() -> None:
    queue = FrameQueue()

    async def relay() -> None:
        for n in range(3):  # no await between them: the reader cannot take one at a time
            queue.put(f"data: {n}\n\n".encode())
        queue.end()

    frames = await asyncio.wait_for(read_all(queue, asyncio.ensure_future(relay())), 5)
    assert frames == [b": stream open\n\ndata: 0\n\ndata: 1\n\ndata: 2\n\n"]


async def test_the_opening_comment_goes_out_alone_when_no_frame_is_queued_yet() -> None:
    queue = FrameQueue()
    go_on = asyncio.Event()

    async def relay() -> None:
        await go_on.wait()
        queue.put(b"data: 1\n\n")
        queue.end()

    written: list[bytes] = []

    async def emit(data: bytes) -> None:
        written.append(data)
        go_on.set()  # the first frame comes once the answer has opened

    await asyncio.wait_for(queue.write(emit, 30, asyncio.ensure_future(relay())), 5)
    assert written == [b": stream open\n\n", b"data: 1\n\n"]


async def test_a_klai_answer_ends_with_its_relay() -> None:
    sink = KlaiSseSink()

    async def relay() -> None:
        await sink.send({"type": "end", "seq": 1})
        await sink.close()  # the relay's sink protocol: must not be what ends the answer

    frames = await asyncio.wait_for(read_all(sink, asyncio.ensure_future(relay())), 5)
    assert frames[0].startswith(b": stream open\n\nevent: end\ndata: ")


async def test_a_quiet_stream_gets_keep_alives_and_a_busy_one_gets_none() -> None:
    queue = FrameQueue()

    async def relay() -> None:
        await asyncio.sleep(0.13)  # quiet: keep-alives at about 0.05 and 0.10
        for n in range(8):  # busy: a frame every 0.02 s, never 0.05 s of silence
            queue.put(f"data: {n}\n\n".encode())
            await asyncio.sleep(0.02)
        queue.end()

    done = asyncio.ensure_future(relay())
    frames = await asyncio.wait_for(read_all(queue, done, 0.05), 5)
    assert frames[0] == b": stream open\n\n"
    quiet, busy = frames[1:3], frames[3:]
    assert quiet == [b": keep-alive\n\n"] * 2
    assert busy == [f"data: {n}\n\n".encode() for n in range(8)]


class Caller:
    """An ASGI server's side of one answer: what was sent, and a hang-up on demand."""

    def __init__(self) -> None:
        self.sent: list[MutableMapping[str, Any]] = []
        self.hung_up = asyncio.Event()
        self.wrote = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)
        self.wrote.set()

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]

    async def hang_up_after_first_frame(
        self, queue: FrameQueue, relay: Coroutine[Any, Any, None], keepalive: float
    ) -> tuple[asyncio.Future[None], asyncio.Future[None]]:
        """Start `relay` and an answer of `queue` to this caller, and hang up once the
        answer wrote `data: 1`; (the relay, the answer), both running on."""
        done = asyncio.ensure_future(relay)
        answer = asyncio.ensure_future(
            SseResponse(queue, keepalive, done, {})({"type": "http"}, self.receive, self.send)
        )
        while b"data: 1" not in b"".join(self.bodies()):
            self.wrote.clear()
            await asyncio.wait_for(self.wrote.wait(), 5)
        self.hung_up.set()
        return done, answer


async def test_an_sse_response_writes_its_head_its_frames_and_its_end() -> None:
    queue, caller = FrameQueue(), Caller()

    async def relay() -> None:
        queue.put(b"data: 1\n\n")
        queue.end()

    answer = SseResponse(queue, 30, asyncio.ensure_future(relay()), {"X-Stream-Id": "st_1"})
    await asyncio.wait_for(answer({"type": "http"}, caller.receive, caller.send), 5)
    head = caller.sent[0]
    assert head["type"] == "http.response.start" and head["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in head["headers"]
    assert (b"x-stream-id", b"st_1") in head["headers"]
    assert not any(name == b"content-length" for name, _ in head["headers"])
    assert caller.bodies() == [b": stream open\n\ndata: 1\n\n", b""]
    assert caller.sent[-1]["more_body"] is False


async def test_an_sse_response_stops_writing_when_the_caller_hangs_up() -> None:
    queue, caller = FrameQueue(), Caller()
    go_on = asyncio.Event()

    async def relay() -> None:
        queue.put(b"data: 1\n\n")
        await go_on.wait()  # the relay runs on after the caller left
        queue.put(b"data: 2\n\n")
        queue.end()

    done, answer = await caller.hang_up_after_first_frame(queue, relay(), 30)
    await asyncio.sleep(0.05)
    # Nothing more is written, and the answer ends with its relay (Lambda would freeze it).
    assert not answer.done()
    go_on.set()
    await asyncio.wait_for(answer, 5)
    assert done.done()
    assert b"".join(caller.bodies()) == b": stream open\n\ndata: 1\n\n"


async def test_a_caller_that_hung_up_holds_none_of_the_rest_of_the_stream() -> None:
    # The relay runs on detached (its channels are owed the rest): the frames it still puts,
    # and the keep-alives of a quiet stretch, are dropped rather than kept until it ends.
    queue, caller = FrameQueue(), Caller()
    go_on = asyncio.Event()

    async def relay() -> None:
        queue.put(b"data: 1\n\n")
        await caller.hung_up.wait()
        await asyncio.sleep(0.05)  # the hang-up was heard
        for n in range(1000):
            queue.put(b"data: %d\n\n" % n)
        await go_on.wait()
        queue.end()

    _, answer = await caller.hang_up_after_first_frame(queue, relay(), 0.01)
    await asyncio.sleep(0.2)  # the relay put its frames; keep-alives were due many times
    assert len(queue._frames) == 0
    go_on.set()
    await asyncio.wait_for(answer, 5)
    assert b"".join(caller.bodies()).endswith(b"data: 1\n\n")


class GoneAfter(Caller):
    """An ASGI 2.4 server whose caller hangs up after `bodies` body messages: the next
    `send` of a body raises OSError."""

    def __init__(self, bodies: int) -> None:
        super().__init__()
        self._left = bodies

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            if self._left == 0:
                raise OSError("the caller is gone")
            self._left -= 1
        await super().send(message)


async def test_an_sse_response_ends_quietly_when_the_server_says_the_caller_is_gone() -> None:
    queue, caller = FrameQueue(), GoneAfter(bodies=1)

    async def relay() -> None:
        while not caller.bodies():  # the answer opened, then frames come
            caller.wrote.clear()
            await caller.wrote.wait()
        queue.put(b"data: 1\n\n")
        queue.put(b"data: 2\n\n")
        queue.end()

    answer = SseResponse(queue, 30, asyncio.ensure_future(relay()), {})
    await asyncio.wait_for(answer({"type": "http"}, caller.receive, caller.send), 5)
    assert caller.bodies() == [b": stream open\n\n"]


async def test_an_sse_response_ends_quietly_when_the_caller_left_after_the_last_frame() -> None:
    queue, caller = FrameQueue(), GoneAfter(bodies=1)

    async def relay() -> None:
        queue.put(b"data: 1\n\n")
        queue.end()

    answer = SseResponse(queue, 30, asyncio.ensure_future(relay()), {})
    await asyncio.wait_for(answer({"type": "http"}, caller.receive, caller.send), 5)
    assert caller.bodies() == [b": stream open\n\ndata: 1\n\n"]


async def test_an_sse_response_writes_its_frames_past_starlettes_wrappers_once_started() -> None:
    """Starlette's error middlewares wrap `send` to see whether the answer started; the
    frames (one write per chunk) go to the server's own `send`, which ProxyApp keeps."""
    queue, server, wrapped = FrameQueue(), Caller(), Caller()

    async def relay() -> None:
        queue.put(b"data: 1\n\n")
        queue.end()

    answer = SseResponse(queue, 30, asyncio.ensure_future(relay()), {})
    scope = {"type": "http", SERVER_SEND: server.send}
    await asyncio.wait_for(answer(scope, wrapped.receive, wrapped.send), 5)
    assert wrapped.sent[0]["type"] == "http.response.start"
    assert server.bodies() == [b": stream open\n\ndata: 1\n\n"]
    assert not any(m["type"] == "http.response.start" for m in server.sent)
    assert wrapped.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_the_proxy_app_keeps_the_servers_send_in_the_scope() -> None:
    seen: dict[str, Any] = {}

    async def endpoint(request: Request) -> Response:
        seen["send"] = request.scope.get(SERVER_SEND)
        return PlainTextResponse("ok")

    server = Caller()
    app = ProxyApp(routes=[Route("/", endpoint)])
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    await asyncio.wait_for(app(scope, server.receive, server.send), 5)
    assert seen["send"] == server.send
    assert server.bodies()[0] == b"ok"
