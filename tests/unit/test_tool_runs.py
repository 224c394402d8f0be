"""Running tools: waiting for a browser's answer (fast path, poll, timeout) and calling a
backend tool's webhook (signed, every failure a result the model can read)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import boto3
import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from streaming_proxy.blocking import BlockingCalls
from streaming_proxy.config import ToolWebhook
from streaming_proxy.contract import Payload
from streaming_proxy.events import PlannedCall
from streaming_proxy.jobs import StreamJob
from streaming_proxy.toolcalls import ToolCallStore
from streaming_proxy.tools import frontend
from streaming_proxy.tools.frontend import FrontendTools, LocalAnswers
from streaming_proxy.tools.loop import ToolRunner
from streaming_proxy.tools.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, ToolWebhooks
from tests.loopback import LoopbackServer
from tests.unit.conftest import MOTO_TABLE

SECRET = "webhook-secret-for-unit-tests-0123456789"
HOOK = ToolWebhook(url="https://tools.example.com/run", secret=SecretStr(SECRET))


def job() -> StreamJob:
    return StreamJob(
        stream_id="st_tools",
        app_id="app1",
        kind="llm",
        action_name="onLlm",
        channels=["room"],
        payload=Payload.model_validate({"messages": [{"role": "user", "content": "x"}]}),
        flush_interval_ms=0,
    )


CALL = PlannedCall("tc_abc", "call_1", "ui_pick", {"shade": "warm"}, frontend=True)


class CountingStore(ToolCallStore):
    reads = 0

    def get(self, app_id: str, call_id: str):  # type: ignore[no-untyped-def]
        CountingStore.reads += 1
        return super().get(app_id, call_id)


def tools(aws_env: None) -> tuple[FrontendTools, CountingStore, LocalAnswers]:
    store = CountingStore(boto3.client("dynamodb", region_name="us-east-1"), MOTO_TABLE)
    local = LocalAnswers()
    return FrontendTools(store, BlockingCalls(2, "t"), local), store, local


async def test_an_answer_recorded_elsewhere_is_found_by_polling(aws_env: None) -> None:
    runner, store, _ = tools(aws_env)
    await runner.open(job(), [CALL])
    waiting = asyncio.create_task(runner.wait("app1", "tc_abc", 10))
    await asyncio.sleep(0.25)
    CountingStore.reads = 0
    store.answer("app1", "tc_abc", {"success": True, "message": "red"}, "conn-1")
    answer = await asyncio.wait_for(waiting, 5)
    assert answer == {"success": True, "message": "red"}
    assert CountingStore.reads <= 3  # backing off: one look per 0.1 s doubling to 1 s


async def test_an_answer_landing_in_this_process_needs_no_read(aws_env: None) -> None:
    runner, _, local = tools(aws_env)
    await runner.open(job(), [CALL])
    waiting = asyncio.create_task(runner.wait("app1", "tc_abc", 10))
    await asyncio.sleep(0)
    CountingStore.reads = 0
    started = time.monotonic()
    assert local.deliver("app1", "tc_abc", {"success": True, "message": "now"})
    assert await waiting == {"success": True, "message": "now"}
    assert time.monotonic() - started < 0.05 and CountingStore.reads == 0


async def test_no_answer_in_time_is_none_and_the_call_is_then_closed(aws_env: None) -> None:
    runner, store, local = tools(aws_env)
    await runner.open(job(), [CALL])
    assert await runner.wait("app1", "tc_abc", 0.3) is None
    await runner.close("app1", ["tc_abc"])
    record = store.get("app1", "tc_abc")
    assert record is not None and record.status == "closed"
    assert not store.answer("app1", "tc_abc", {"success": True, "message": "late"}, "c")
    assert not local.deliver("app1", "tc_abc", {})  # nobody waits any more


class SlowClosingStore(ToolCallStore):
    """Counts closes and how many ran at once (each takes 0.2 s)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.closes: list[str] = []
        self.at_once = self.most_at_once = 0
        self._lock = threading.Lock()

    def close(self, app_id: str, call_id: str) -> None:
        with self._lock:
            self.closes.append(call_id)
            self.at_once += 1
            self.most_at_once = max(self.most_at_once, self.at_once)
        time.sleep(0.2)
        super().close(app_id, call_id)
        with self._lock:
            self.at_once -= 1


def slow_store() -> SlowClosingStore:
    return SlowClosingStore(boto3.client("dynamodb", region_name="us-east-1"), MOTO_TABLE)


async def test_an_answer_recorded_just_after_the_wait_gave_up_is_the_result(
    aws_env: None,
) -> None:
    store = slow_store()
    late = {"success": True, "message": "red, just in time"}

    class GaveUpThenAnswered(FrontendTools):
        """The browser's answer lands between the wait's last look and the close."""

        async def wait(self, app_id: str, call_id: str, within: float) -> dict[str, object] | None:
            assert await super().wait(app_id, call_id, within) is None
            assert store.answer(app_id, call_id, late, "conn-1")  # its sender got `ack`
            return None

    frontend = GaveUpThenAnswered(store, BlockingCalls(2, "t"), LocalAnswers())
    runner = ToolRunner(job(), frontend, None, None, timeout_seconds=0.2)  # type: ignore[arg-type]
    await runner.open([CALL])
    try:
        assert await runner.run(CALL) == late  # not "did not answer": the sender was told ok
    finally:
        await runner.close([CALL])
    record = store.get("app1", CALL.id)
    assert record is not None and (record.status, record.answer) == ("answered", late)


async def test_only_calls_without_an_answer_are_closed_and_all_at_once(aws_env: None) -> None:
    store = slow_store()
    local = LocalAnswers()
    runner = ToolRunner(
        job(),
        FrontendTools(store, BlockingCalls(4, "t"), local),
        None,  # type: ignore[arg-type]
        None,
        timeout_seconds=30,
    )
    calls = [PlannedCall(f"tc_{n}", f"call_{n}", "ui_pick", {}, frontend=True) for n in range(4)]
    await runner.open(calls)
    answered = asyncio.create_task(runner.run(calls[0]))
    others = [asyncio.create_task(runner.run(c)) for c in calls[1:]]
    await asyncio.sleep(0.05)
    assert store.answer("app1", "tc_0", {"success": True, "message": "red"}, "conn-1")
    assert local.deliver("app1", "tc_0", {"success": True, "message": "red"})
    assert await answered == {"success": True, "message": "red"}
    for task in others:  # a stop: the waits are cancelled, the calls closed
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    await runner.close(calls)
    assert sorted(store.closes) == ["tc_1", "tc_2", "tc_3"]  # the answered one needs none
    assert store.most_at_once == 3
    for call in calls[1:]:
        record = store.get("app1", call.id)
        assert record is not None and record.status == "closed"


def test_the_poll_backs_off_to_one_read_a_second() -> None:
    assert (frontend.FIRST_POLL_SECONDS, frontend.MAX_POLL_SECONDS) == (0.1, 1.0)


# --- backend tools by webhook -----------------------------------------------------------------


def webhooks(handler: httpx.MockTransport, timeout: float = 5) -> ToolWebhooks:
    client = httpx.AsyncClient(transport=handler)
    return ToolWebhooks(client, timeout_seconds=timeout, max_bytes=1024)


async def test_the_call_is_signed_so_the_receiver_can_verify_it() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"success": True, "message": "12 in stock"})

    payload = {"toolCallId": "tc_1", "name": "lookup_stock", "arguments": {"sku": "A1"}}
    result = await webhooks(httpx.MockTransport(handler)).call(HOOK, payload)
    assert result == {"success": True, "message": "12 in stock"}
    request = seen[0]
    body = request.content
    timestamp = request.headers[TIMESTAMP_HEADER]
    assert abs(int(timestamp) - time.time()) < 5
    # What a receiver does: HMAC-SHA256 over "<timestamp>.<raw body>" with the shared secret.
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert request.headers[SIGNATURE_HEADER] == "v1=" + expected.hexdigest()
    assert json.loads(body) == payload
    assert request.url == "https://tools.example.com/run"


async def test_every_webhook_failure_is_a_result_the_model_can_read() -> None:
    def answer_with(response: httpx.Response) -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: response)

    def times_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    cases = {
        "failed (its webhook answered HTTP 500)": answer_with(httpx.Response(500)),
        "is not valid JSON": answer_with(httpx.Response(200, text="<html>ok</html>")),
        "over 1024 bytes": answer_with(httpx.Response(200, json={"x": "y" * 2000})),
        "did not answer within 5 seconds": httpx.MockTransport(times_out),
        "could not be reached (ConnectError)": httpx.MockTransport(refused),
    }
    for says, transport in cases.items():
        result = await webhooks(transport).call(HOOK, {})
        assert result["success"] is False and says in result["message"], (says, result)
    wrapped = await webhooks(answer_with(httpx.Response(200, json=[1, 2]))).call(HOOK, {})
    assert wrapped == {"success": True, "data": [1, 2]}


# --- webhooks that misbehave, served for real on loopback --------------------------------------


class MisbehavingTools:
    """A webhook server whose routes misbehave in one way each; counts what it saw."""

    def __init__(self) -> None:
        self.requests = 0
        self.chunks_sent = 0
        self.client_left = threading.Event()
        self._server = LoopbackServer()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.port}{path}"

    def app(self) -> Starlette:
        async def drip(request: Request) -> Response:
            async def bytes_() -> AsyncIterator[bytes]:
                yield b'{"m": "'
                for _ in range(60):  # each byte well inside httpx's per-read timeout
                    await asyncio.sleep(0.5)
                    yield b"x"

            return StreamingResponse(bytes_(), media_type="application/json")

        async def huge(request: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                try:
                    for _ in range(100):
                        self.chunks_sent += 1
                        yield b"x" * 1024 * 1024
                        await asyncio.sleep(0.01)  # room to notice the client leaving
                finally:
                    self.client_left.set()

            return StreamingResponse(chunks(), media_type="application/json")

        def answering(body: bytes) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                return Response(body, media_type="application/json")

            return endpoint

        async def moved(request: Request) -> Response:
            self.requests += 1
            return RedirectResponse("/elsewhere", status_code=302)

        async def elsewhere(request: Request) -> Response:
            self.requests += 1
            return Response(b'{"success": true}', media_type="application/json")

        return Starlette(
            routes=[
                Route("/drip", drip, methods=["POST"]),
                Route("/huge", huge, methods=["POST"]),
                Route("/deep", answering(DEEP), methods=["POST"]),
                Route("/surrogate", answering(SURROGATE), methods=["POST"]),
                Route("/moved", moved, methods=["POST"]),
                Route("/elsewhere", elsewhere, methods=["POST", "GET"]),
            ]
        )

    def __enter__(self) -> MisbehavingTools:
        self._server.start(self.app())
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()


DEEP = b"[" * 20000 + b"]" * 20000
SURROGATE = b'{"m": "\\ud800"}'  # valid JSON text; the string it decodes to is not Unicode


@pytest.fixture
def misbehaving() -> Iterator[MisbehavingTools]:
    with MisbehavingTools() as server:
        yield server


async def call_real(
    server: MisbehavingTools,
    path: str,
    *,
    deadline: float = 5,
    max_bytes: int = 1024,
    client: httpx.AsyncClient | None = None,
    payload: dict[str, object] | None = None,
) -> dict[str, object]:
    async with client or httpx.AsyncClient() as http:
        hooks = ToolWebhooks(http, timeout_seconds=deadline, max_bytes=max_bytes)
        hook = ToolWebhook(url=server.url(path), secret=SecretStr(SECRET))
        return await hooks.call(hook, payload if payload is not None else {"name": "t"})


def says(result: dict[str, object], text: str) -> bool:
    message = result.get("message")
    return result.get("success") is False and isinstance(message, str) and text in message


async def test_a_webhook_that_drips_its_answer_is_cut_off_at_the_overall_deadline(
    misbehaving: MisbehavingTools,
) -> None:
    # httpx's timeout is per read: a byte every 0.5 s would keep a 1 s timeout from firing.
    result = await asyncio.wait_for(call_real(misbehaving, "/drip", deadline=1), 3)
    assert says(result, "did not answer within 1 seconds"), result


async def test_an_answer_over_the_limit_is_not_read_to_its_end(
    misbehaving: MisbehavingTools,
) -> None:
    result = await asyncio.wait_for(call_real(misbehaving, "/huge", max_bytes=1024), 10)
    assert says(result, "over 1024 bytes"), result
    assert await asyncio.to_thread(misbehaving.client_left.wait, 5)
    assert misbehaving.chunks_sent < 100  # the proxy hung up instead of taking 100 MiB


async def test_an_answer_nested_too_deep_is_a_failure_not_a_crash(
    misbehaving: MisbehavingTools,
) -> None:
    result = await call_real(misbehaving, "/deep", max_bytes=len(DEEP))
    assert says(result, "nests deeper than 64 levels"), result


async def test_an_answer_with_a_lone_surrogate_is_a_failure(misbehaving: MisbehavingTools) -> None:
    result = await call_real(misbehaving, "/surrogate")
    assert says(result, "not valid Unicode"), result
    json.dumps(result, ensure_ascii=False).encode("utf-8")  # what the model gets encodes


async def test_a_redirect_is_not_followed_whatever_the_client_does(
    misbehaving: MisbehavingTools,
) -> None:
    following = httpx.AsyncClient(follow_redirects=True)
    result = await call_real(misbehaving, "/moved", client=following)
    assert says(result, "HTTP 302"), result
    assert misbehaving.requests == 1


async def test_arguments_that_cannot_be_encoded_are_a_failure_and_nothing_is_sent(
    misbehaving: MisbehavingTools,
) -> None:
    payload: dict[str, object] = {"name": "t", "arguments": {"q": "\ud800"}}
    result = await call_real(misbehaving, "/elsewhere", payload=payload)
    assert says(result, "could not be sent"), result
    assert misbehaving.requests == 0
