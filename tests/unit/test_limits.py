"""Per-app limits (limits.py) on moto's DynamoDB: the counting windows, the conditional
request counter (under concurrency in tests/integration/test_governance.py: in-process moto
does not apply a conditional write atomically), the token quota, the observer adding a
stream's usage, Lambda detach mode counting once per request, and a store failure refusing
(503) rather than admitting."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
import httpx
import pytest

from streaming_proxy.api.app import create_app
from streaming_proxy.auth import key_digest
from streaming_proxy.config import AppConfig
from streaming_proxy.errors import ProxyError, QuotaExceeded, RateLimited
from streaming_proxy.limits import LimitStore, TokenMeter, day_window, minute_window
from streaming_proxy.outcome import StreamOutcome
from streaming_proxy.service import StreamService
from tests.unit.conftest import MOTO_TABLE
from tests.unit.test_lambda_mode import KEY, RecordingPoster, lambda_app, request, settings

# 2026-11-21 20:30:45 UTC
NOW = 1_795_293_045.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limits(aws_env: None, clock: Clock) -> LimitStore:
    return LimitStore(boto3.client("dynamodb", region_name="us-east-1"), MOTO_TABLE, clock)


def item(window: str, app_id: str = "a") -> dict[str, Any]:
    got = boto3.client("dynamodb", region_name="us-east-1").get_item(
        TableName=MOTO_TABLE, Key={"pk": {"S": f"LIMIT#{app_id}#{window}"}, "sk": {"S": "META"}}
    )
    return dict(got.get("Item", {}))


def test_windows_are_the_utc_minute_and_day_with_the_seconds_to_the_next() -> None:
    minute, day = minute_window(NOW), day_window(NOW)
    assert (minute.name, minute.retry_after(NOW)) == ("rpm#202611212030", 15)
    assert (day.name, day.retry_after(NOW)) == ("tpd#2026-11-21", 3 * 3600 + 29 * 60 + 15)
    assert minute_window(NOW + 14.9).name == minute.name != minute_window(NOW + 15).name
    assert minute.retry_after(NOW + 14.5) == 1  # never 0: the header must make a client wait


def test_exactly_the_limit_is_counted_per_minute_then_429_until_the_next(
    limits: LimitStore, clock: Clock
) -> None:
    for _ in range(3):
        limits.count_request("a", 3)
    with pytest.raises(RateLimited) as raised:
        limits.count_request("a", 3)
    assert raised.value.headers() == {"Retry-After": "15"}
    assert raised.value.status == 429 and raised.value.kind == "rate_limited"
    assert "rate limit of 3 requests per minute; retry in 15 s" in raised.value.message
    counter = item("rpm#202611212030")
    assert counter["requests"] == {"N": "3"}, "a refused request is not counted"
    assert int(counter["expiresAt"]["N"]) >= NOW + 15
    clock.now += 15
    limits.count_request("a", 3)
    assert item("rpm#202611212031")["requests"] == {"N": "1"}
    limits.count_request("b", 1)  # apps never share a counter


def test_the_quota_refuses_once_the_days_tokens_reach_it(limits: LimitStore, clock: Clock) -> None:
    limits.check_quota("a", 100)
    limits.add_tokens("a", 60)
    limits.check_quota("a", 100)  # 60 < 100: a stream may start (and overshoot)
    limits.add_tokens("a", 60)
    with pytest.raises(QuotaExceeded) as raised:
        limits.check_quota("a", 100)
    assert raised.value.kind == "quota_exceeded" and raised.value.status == 429
    assert raised.value.headers() == {"Retry-After": str(3 * 3600 + 29 * 60 + 15)}
    assert "(120 of 100 tokens)" in raised.value.message
    assert int(item("tpd#2026-11-21")["expiresAt"]["N"]) > NOW + 3 * 3600
    clock.now += 3 * 3600 + 29 * 60 + 15  # midnight UTC: a new day
    limits.check_quota("a", 100)
    assert limits.tokens_today("a") == 0


async def test_the_meter_adds_final_usage_but_not_for_a_stream_refused_before_its_first_byte() -> (
    None
):
    added: list[int] = []

    async def add(tokens: int) -> None:
        added.append(tokens)

    meter = TokenMeter(add)
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "estimated": True}
    await meter.on_finish(StreamOutcome(usage=usage, started=True))
    failed_midway = StreamOutcome(usage=usage, started=True, error=ProxyError("cut"))
    await meter.on_finish(failed_midway)
    await meter.on_finish(StreamOutcome(usage=usage, error=ProxyError("refused")))
    await meter.on_finish(StreamOutcome(usage={**usage, "total_tokens": 0}, started=True))
    assert added == [7, 7]


def governed(**governance: Any) -> dict[str, AppConfig]:
    config = {"keySha256": key_digest(KEY), "tokenSecret": "s" * 32, **governance}
    return {"app1": AppConfig.model_validate(config)}


async def test_lambda_detach_mode_counts_the_request_once_and_the_streams_tokens(
    aws_env: None,
) -> None:
    """The ack counts the request; the self-invoke's relay (the `/events` path) adds its
    tokens and counts no request of its own."""
    service = StreamService(
        settings(apps=governed(rateLimit=2, tokenQuota=1000)), poster=RecordingPoster()
    )
    # A still clock: the three requests fall in one minute, whenever the test runs.
    service.limits = LimitStore(
        boto3.client("dynamodb", region_name="us-east-1"), MOTO_TABLE, Clock()
    )
    client, invoked = await lambda_app(service)
    first = await client.post("/llm/query", json=request())
    second = await client.post("/llm/query", json=request())
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    streams = [first.json()["streamId"], second.json()["streamId"]]
    async with asyncio.timeout(5):  # the final record is written after the observers ran
        while not all(finished(service, stream_id) for stream_id in streams):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert len(invoked) == 2
    used = sum(usage_of(service, stream_id) for stream_id in streams)
    assert used > 0 and service.limits.tokens_today("app1") == used
    third = await client.post("/llm/query", json=request())
    assert third.status_code == 429 and third.json()["error"]["type"] == "rate_limited"
    assert third.headers["retry-after"] == "15"
    assert len(invoked) == 2
    await client.aclose()
    await service.aclose()


def finished(service: StreamService, stream_id: str) -> bool:
    record = service.streams.get(stream_id)
    return record is not None and record.finished


def usage_of(service: StreamService, stream_id: str) -> int:
    record = service.streams.get(stream_id)
    assert record is not None and record.usage is not None
    return int(record.usage["total_tokens"])


async def query_without_a_table(apps: dict[str, AppConfig] | None = None) -> httpx.Response:
    """A `stream: false` query (nothing to register) on a service whose table is missing."""
    overrides: dict[str, Any] = {"detach_mode": "task", "table_name": "no-such-table"}
    service = StreamService(settings(**overrides, **({"apps": apps} if apps else {})))
    app = create_app()
    app.state.service = service
    body = {**request(), "channels": [], "payload": {**request()["payload"], "stream": False}}
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            return await client.post("/llm/query", json=body)
    finally:
        await service.aclose()


@pytest.mark.parametrize("governance", [{"rateLimit": 10}, {"tokenQuota": 10}])
async def test_a_limit_that_cannot_be_checked_refuses_with_503(
    aws_env: None, governance: dict[str, Any]
) -> None:
    """Fail closed: with the table unreachable a limited app is refused, never let through."""
    r = await query_without_a_table(governed(**governance))
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "dependency_unavailable"
    assert "retry-after" not in r.headers


async def test_an_app_without_limits_never_reads_a_counter(aws_env: None) -> None:
    r = await query_without_a_table()
    assert r.status_code == 200, r.text
