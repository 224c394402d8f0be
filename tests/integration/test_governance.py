"""Per-app governance against the running local stack: the models allow-list and pinning,
`allowClientProviderKey: false`, `rateLimit` under concurrency and `tokenQuota` counted from
each stream's final usage, on every endpoint that starts a stream (apps: GOVERNED_APPS)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from tests.conftest import Stack, governed_key
from tests.fake_llm import FakeLlm
from tests.integration.test_bad_input import assert_klai_error

HI = [{"role": "user", "content": "Hi"}]
# fake-text's usage on the openai wire: 12 prompt + 30 completion tokens.
FAKE_TEXT_TOKENS = 42


def klai_body(channels: list[str] | None = None, **payload: Any) -> dict[str, Any]:
    stream = bool(channels)
    return {
        "channels": channels or [],
        "actionName": "onLlm",
        "payload": {"provider": "openai", "model": "fake-text", "stream": stream, "messages": HI}
        | payload,
    }


async def send(
    client: httpx.AsyncClient, app_id: str, path: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post(
        path, json=body, headers={"x-api-key": governed_key(app_id), **headers}
    )


def assert_openai_error(r: httpx.Response, status: int, openai_type: str, code: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"]) == (openai_type, code), error


def assert_retry_after(r: httpx.Response, at_most: int) -> int:
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= at_most, r.headers
    return wait


# -- models: allow-list and pinning ----------------------------------------------------------


async def test_a_pinned_model_fills_in_a_request_without_one(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        body = klai_body(provider="anthropic")
        del body["payload"]["model"]
        r = await send(client, "governed", "/llm/query", body)
    assert r.status_code == 200, r.text
    assert fake_llm.last("/messages").body["model"] == "fake-text"


async def test_a_pinned_provider_refuses_any_other_model_with_403(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    before = len(fake_llm.requests)
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await send(client, "governed", "/llm/query", klai_body(provider="anthropic", model="x"))
        face = await send(
            client,
            "governed",
            "/v1/chat/completions",
            {"model": "anthropic/claude-opus", "messages": HI},
        )
    error = assert_klai_error(r, 403, "model_not_allowed")
    assert "pinned to anthropic model 'fake-text'" in error["message"], error
    assert error["fields"][0]["field"] == "payload.model"
    assert_openai_error(face, 403, "permission_error", "model_not_allowed")
    assert face.json()["error"]["param"] == "model"
    assert len(fake_llm.requests) == before, "a refused request reached the provider"


async def test_the_allow_list_takes_exact_names_and_prefixes(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        exact = await send(client, "governed", "/llm/query", klai_body())
        prefixed = await send(client, "governed", "/stream/create", klai_body(model="fake-tools"))
        assert fake_llm.last("/chat/completions").body["model"] == "fake-tools"
        before = len(fake_llm.requests)
        other = await send(client, "governed", "/llm/query", klai_body(model="fake-slow"))
        missing = await send(client, "governed", "/llm/query", klai_body(model=None))
        face = await send(
            client, "governed", "/v1/chat/completions", {"model": "openai/gpt-4o", "messages": HI}
        )
    assert exact.status_code == 200 and prefixed.status_code == 200, (exact.text, prefixed.text)
    error = assert_klai_error(other, 403, "model_not_allowed")
    assert "'fake-slow'" in error["message"] and "fake-tool*" in error["message"], error
    assert_klai_error(missing, 400, "invalid_request")
    assert_openai_error(face, 403, "permission_error", "model_not_allowed")
    assert len(fake_llm.requests) == before, "a refused request reached the provider"


async def test_a_provider_the_models_map_leaves_out_is_refused(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await send(client, "governed", "/llm/query", klai_body(provider="mock", model="echo"))
        face = await send(
            client, "governed", "/v1/chat/completions", {"model": "mock/echo", "messages": HI}
        )
    error = assert_klai_error(r, 403, "model_not_allowed")
    assert "may not use provider 'mock'" in error["message"], error
    assert error["fields"][0]["field"] == "payload.provider"
    assert_openai_error(face, 403, "permission_error", "model_not_allowed")


async def test_a_refused_stream_publishes_nothing_and_writes_no_record(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await send(client, "governed", "/llm/query", klai_body(["gov-room"], model="other"))
    assert_klai_error(r, 403, "model_not_allowed")
    assert r.json()["actionName"] == "onLlm"
    rows = stack.dynamodb_client().scan(TableName=stack.table)["Items"]
    assert not [i for i in rows if i.get("app", {}).get("S") == "governed"]


# -- allowClientProviderKey: false -------------------------------------------------------------


async def test_an_app_without_client_provider_keys_refuses_payload_api_key(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        before = len(fake_llm.requests)
        r = await send(
            client, "governed", "/llm/query", klai_body(apiKey="caller-provider-key-123456")
        )
        assert len(fake_llm.requests) == before
        served = await send(client, "governed", "/llm/query", klai_body())
    error = assert_klai_error(r, 403, "provider_key_refused")
    assert error["fields"] == [{"field": "payload.apiKey", "message": "not allowed for this app"}]
    assert "caller-provider-key" not in r.text
    assert served.status_code == 200, served.text
    assert fake_llm.last("/chat/completions").headers["authorization"] != (
        "Bearer caller-provider-key-123456"
    )


async def test_other_apps_may_still_bring_their_provider_key(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.post(
            "/llm/query",
            json=klai_body(apiKey="caller-provider-key-654321"),
            headers={"x-api-key": stack.api_key},
        )
    assert r.status_code == 200, r.text
    assert fake_llm.last("/chat/completions").headers["authorization"] == (
        "Bearer caller-provider-key-654321"
    )


# -- rateLimit: requests per minute ------------------------------------------------------------


async def away_from_the_minute_boundary(margin: float = 8.0) -> None:
    """Sleep past the next minute when fewer than `margin` seconds of this one are left, so a
    burst falls in one counting window."""
    left = 60 - time.time() % 60
    if left < margin:
        await asyncio.sleep(left + 0.2)


async def test_under_20_concurrent_requests_exactly_rate_limit_succeed(stack: Stack) -> None:
    """`metered` allows 5 requests a minute: of 20 sent at once over the three endpoints
    that start streams, 5 are served and 15 answer 429 in their face's shape, with
    Retry-After counting to the next minute."""
    await away_from_the_minute_boundary()
    klai = klai_body(provider="mock", model="echo", providerArgs={"delayMs": 0})
    face = {"model": "mock/echo", "messages": HI, "providerArgs": {"delayMs": 0}}
    paths = ["/llm/query", "/stream/create", "/v1/chat/completions", "/llm/query"] * 5
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        answers = await asyncio.gather(
            *(
                send(client, "metered", path, face if path.startswith("/v1") else klai)
                for path in paths
            )
        )
    served = [r for r in answers if r.status_code == 200]
    limited = [(p, r) for p, r in zip(paths, answers, strict=True) if r.status_code == 429]
    assert len(served) == 5 and len(limited) == 15, [r.status_code for r in answers]
    for path, r in limited:
        assert_retry_after(r, 60)
        if path.startswith("/v1"):
            assert_openai_error(r, 429, "rate_limit_error", "rate_limited")
        else:
            error = assert_klai_error(r, 429, "rate_limited")
            assert "rate limit of 5 requests per minute" in error["message"], error
            assert error["details"] == "rateLimit: 5 requests per minute"
    rows = stack.dynamodb_client().scan(TableName=stack.table)["Items"]
    counters = [i for i in rows if i["pk"]["S"].startswith("LIMIT#metered#rpm#")]
    assert [int(i["requests"]["N"]) for i in counters] == [5]
    assert int(counters[0]["expiresAt"]["N"]) > time.time() + 60


# -- tokenQuota: tokens per day ----------------------------------------------------------------


async def sse_stream(client: httpx.AsyncClient, app_id: str, channel: str) -> dict[str, Any]:
    """One SSE stream of fake-text; its `end` envelope."""
    frames: list[dict[str, Any]] = []
    async with client.stream(
        "POST",
        "/llm/query",
        json=klai_body([channel]),
        headers={"x-api-key": governed_key(app_id), "accept": "text/event-stream"},
    ) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
    assert frames[-1]["type"] == "end", frames
    return frames[-1]


def tokens_counted(stack: Stack, app_id: str) -> int:
    rows = stack.dynamodb_client().scan(TableName=stack.table)["Items"]
    counters = [i for i in rows if i["pk"]["S"].startswith(f"LIMIT#{app_id}#tpd#")]
    return sum(int(i["tokens"]["N"]) for i in counters)


async def test_the_token_quota_refuses_requests_once_the_days_usage_reached_it(
    stack: Stack,
) -> None:
    """`quota` has 100 tokens a day and each fake-text stream reports 42 in `end.usage`: the
    third stream starts at 84 (under the quota) and takes the day to 126; then every
    endpoint answers 429 until midnight UTC."""
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        ends = [await sse_stream(client, "quota", "quota-room") for _ in range(3)]
        assert [end["usage"]["total_tokens"] for end in ends] == [FAKE_TEXT_TOKENS] * 3
        assert not any(end["usage"]["estimated"] for end in ends)
        assert tokens_counted(stack, "quota") == 3 * FAKE_TEXT_TOKENS
        klai = await send(client, "quota", "/llm/query", klai_body(["quota-room"]))
        chat = await send(client, "quota", "/stream/create", klai_body())
        face = await send(
            client, "quota", "/v1/chat/completions", {"model": "openai/fake-text", "messages": HI}
        )
    error = assert_klai_error(klai, 429, "quota_exceeded")
    assert "token quota for today (126 of 100 tokens)" in error["message"], error
    assert error["details"] == "tokenQuota: 100 tokens per day"
    assert_klai_error(chat, 429, "quota_exceeded")
    assert_openai_error(face, 429, "rate_limit_error", "quota_exceeded")
    midnight = 86_400 - int(time.time()) % 86_400
    for r in (klai, chat, face):
        assert abs(assert_retry_after(r, 86_400) - midnight) <= 5
    assert tokens_counted(stack, "quota") == 3 * FAKE_TEXT_TOKENS, "refusals add no tokens"
