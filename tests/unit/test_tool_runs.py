"""Running tools: waiting for a browser's answer (fast path, poll, timeout) and calling a
backend tool's webhook (signed, every failure a result the model can read)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import boto3
import httpx
from pydantic import SecretStr

from streaming_proxy.blocking import BlockingCalls
from streaming_proxy.config import ToolWebhook
from streaming_proxy.contract import Payload
from streaming_proxy.events import PlannedCall
from streaming_proxy.jobs import StreamJob
from streaming_proxy.toolcalls import ToolCallStore
from streaming_proxy.tools import frontend
from streaming_proxy.tools.frontend import FrontendTools, LocalAnswers
from streaming_proxy.tools.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, ToolWebhooks
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
        "was not JSON": answer_with(httpx.Response(200, text="<html>ok</html>")),
        "over 1024 bytes": answer_with(httpx.Response(200, json={"x": "y" * 2000})),
        "did not answer within 5 seconds": httpx.MockTransport(times_out),
        "could not be reached (ConnectError)": httpx.MockTransport(refused),
    }
    for says, transport in cases.items():
        result = await webhooks(transport).call(HOOK, {})
        assert result["success"] is False and says in result["message"], (says, result)
    wrapped = await webhooks(answer_with(httpx.Response(200, json=[1, 2]))).call(HOOK, {})
    assert wrapped == {"success": True, "data": [1, 2]}
