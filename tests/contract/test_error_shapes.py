"""Error fixtures: every error kind the product answers over HTTP, provoked for real against
the local stack, in Klai's types on Klai routes (`code` a number, `details` a string, our
`type`, `fields` only for field problems) and in OpenAI's shape and status on `/v1`."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from streaming_proxy import errors
from tests.conftest import Stack, governed_key
from tests.integration.test_tool_loop import ASK_COLOUR, SAY_COLOUR, query, start, tool_call
from tests.wsclient import Subscriber

HI = [{"role": "user", "content": "Hi"}]
LOOPBACK_IMAGE = {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}
IMAGE_MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "What?"}, LOOPBACK_IMAGE]}]
TOO_LARGE = b'{"payload": {"messages": "' + b"x" * 1_100_000 + b'"}}'
# Kinds no request can provoke against a healthy local stack: each is answered through the
# same `error_object` / `openai_error` as every row below.
NOT_PROVOKABLE = {
    "internal_error": "only an unexpected exception, which no request may cause",
    "dependency_unavailable": "needs DynamoDB or Lambda down, not the shared stack's",
    "upstream_timeout": "needs the 60 s idle timeout, longer than a contract test",
    "gone": "a WebSocket delivery outcome, never an HTTP answer",
    "delivery_failed": "a WebSocket delivery outcome, never an HTTP answer",
    "delivery_throttled": "a WebSocket delivery outcome, never an HTTP answer",
    "delivery_rejected": "a WebSocket delivery outcome, never an HTTP answer",
    "delivery_server_error": "a WebSocket delivery outcome, never an HTTP answer",
    "delivery_unreachable": "a WebSocket delivery outcome, never an HTTP answer",
}

Provoke = Callable[[Stack], Awaitable[httpx.Response]]


async def send(
    stack: Stack,
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
    key: bool = True,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = dict(headers or {})
    if key:
        sent["x-api-key"] = stack.api_key
    content = body if isinstance(body, bytes) else None
    as_json = None if isinstance(body, bytes) else body
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        return await client.request(
            method, path, content=content, json=as_json, headers=sent or None
        )


def klai_query(provider: str, model: str = "fake-text", **payload: Any) -> dict[str, Any]:
    """A non-streamed LLM Query for `provider`'s `model` on the fake upstream."""
    return {
        "actionName": "onLlmResult",
        "payload": {"provider": provider, "model": model, "stream": False, "messages": HI}
        | payload,
    }


def klai(path: str, body: Any = None, **how: Any) -> Provoke:
    return lambda stack: send(stack, path, body, **how)


def face(body: Any = None, path: str = "/v1/chat/completions", **how: Any) -> Provoke:
    return lambda stack: send(stack, path, body, **how)


def chat(model: str, messages: Any = HI, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": messages, **fields}


async def second_tool_answer(stack: Stack) -> httpx.Response:
    """A frontend tool call answered by a page (its subscribe token), then by the backend:
    the page's answer won (the same sender repeating itself would be accepted again)."""
    sub = await Subscriber.open(stack.ws, stack.token("errors-conflict"))
    try:
        stream_id = await start(stack, query("errors-conflict", [ASK_COLOUR, SAY_COLOUR]))
        call = await tool_call(sub, stream_id)
        answer = {"toolCallId": call["toolCallId"], "success": True, "message": "teal"}
        token = {"x-subscribe-token": stack.token("errors-conflict")}
        first = await send(stack, "/llm/tool-response", answer, key=False, headers=token)
        assert first.status_code == 200, first.text
        return await send(stack, "/llm/tool-response", answer)
    finally:
        await sub.close()


def governed(app_id: str, path: str, body: Any) -> Provoke:
    """A request with the key of one of the stack's GOVERNED_APPS."""
    return klai(path, body, key=False, headers={"x-api-key": governed_key(app_id)})


def over_limit(app_id: str, path: str, body: Any) -> Provoke:
    """The same request until the app's limit refuses it: `hasty` serves one request a
    minute and `spent` one stream a day (its quota is 1 token), so a third try is refused
    even when a minute turns between the first two."""

    async def provoke(stack: Stack) -> httpx.Response:
        for _ in range(3):
            r = await governed(app_id, path, body)(stack)
            if r.status_code == 429:
                break
        return r

    return provoke


@dataclass(frozen=True)
class Case:
    kind: str
    status: int
    provoke: Provoke
    code: int | None = None  # Klai's `error.code` when not the status (a provider's number)
    fields: bool = False


KLAI = {
    "bad_request": Case("bad_request", 400, klai("/llm/query", b"[1]")),
    "invalid_request": Case(
        "invalid_request", 400, klai("/llm/query", klai_query("openai", messages="hi")), fields=True
    ),
    "unknown_provider": Case("unknown_provider", 400, klai("/llm/query", klai_query("nosuch"))),
    "image_url_refused": Case(
        "image_url_refused",
        400,
        klai("/llm/query", klai_query("bedrock", messages=IMAGE_MESSAGES)),
        fields=True,
    ),
    "unauthorized": Case("unauthorized", 401, klai("/llm/query", klai_query("openai"), key=False)),
    "provider_key_missing": Case(
        "provider_key_missing", 401, klai("/llm/query", klai_query("gemini"))
    ),
    "forbidden": Case(
        "forbidden",
        403,
        klai(
            "/llm/tool-response",
            {"toolCallId": "call_x", "success": True, "message": "m"},
            key=False,
            headers={"x-subscribe-token": "not-a-token"},
        ),
    ),
    "not_found": Case("not_found", 404, klai("/no/such/path", method="GET")),
    "not_found_tool_call": Case(
        "not_found",
        404,
        klai("/llm/tool-response", {"toolCallId": "call_nobody", "success": True, "message": "m"}),
    ),
    "method_not_allowed": Case("method_not_allowed", 405, klai("/llm/query", method="GET")),
    "conflict": Case("conflict", 409, second_tool_answer),
    "payload_too_large": Case("payload_too_large", 413, klai("/llm/query", TOO_LARGE)),
    "upstream_error_provider_401": Case(
        "upstream_error", 401, klai("/llm/query", klai_query("openai", "fake-unauthorized"))
    ),
    "upstream_error_provider_500": Case(
        "upstream_error", 502, klai("/llm/query", klai_query("openai", "fake-echo-text")), code=500
    ),
    "upstream_error_provider_html_502": Case(
        "upstream_error", 502, klai("/llm/query", klai_query("anthropic", "fake-echo-html"))
    ),
    "model_not_allowed": Case(
        "model_not_allowed",
        403,
        governed("governed", "/llm/query", klai_query("openai", "gpt-4o")),
        fields=True,
    ),
    "provider_key_refused": Case(
        "provider_key_refused",
        403,
        governed("governed", "/llm/query", klai_query("openai", apiKey="caller-key-0123456")),
        fields=True,
    ),
    "rate_limited": Case(
        "rate_limited", 429, over_limit("hasty", "/llm/query", klai_query("openai"))
    ),
    "quota_exceeded": Case(
        "quota_exceeded", 429, over_limit("spent", "/llm/query", klai_query("openai"))
    ),
}

# (case, OpenAI's status, OpenAI's error type, `param` or None)
OPENAI = {
    "bad_request": (Case("bad_request", 400, face(b"[1]")), "invalid_request_error", None),
    "invalid_request": (
        Case("invalid_request", 400, face({"model": "openai/fake-text"})),
        "invalid_request_error",
        "messages",
    ),
    "image_url_refused": (
        Case("image_url_refused", 400, face(chat("bedrock/fake-text", IMAGE_MESSAGES))),
        "invalid_request_error",
        "messages.0.content.1",
    ),
    "unauthorized": (
        Case("unauthorized", 401, face(chat("openai/fake-text"), key=False)),
        "authentication_error",
        None,
    ),
    "provider_key_missing": (
        Case("provider_key_missing", 401, face(chat("gemini/fake-text"))),
        "authentication_error",
        None,
    ),
    "not_found": (
        Case("not_found", 404, face(path="/v1/no/such/path", method="GET")),
        "not_found_error",
        None,
    ),
    "method_not_allowed": (
        Case("method_not_allowed", 405, face(method="GET")),
        "invalid_request_error",
        None,
    ),
    "payload_too_large": (
        Case("payload_too_large", 413, face(TOO_LARGE)),
        "invalid_request_error",
        None,
    ),
    "upstream_error_provider_401": (
        Case("upstream_error", 401, face(chat("openai/fake-unauthorized"))),
        "authentication_error",
        None,
    ),
    "upstream_error_provider_500": (
        Case("upstream_error", 502, face(chat("openai/fake-echo-text"))),
        "api_error",
        None,
    ),
    "model_not_allowed": (
        Case(
            "model_not_allowed",
            403,
            governed("governed", "/v1/chat/completions", chat("openai/gpt-4o")),
        ),
        "permission_error",
        "model",
    ),
    "rate_limited": (
        Case(
            "rate_limited",
            429,
            over_limit("hasty", "/v1/chat/completions", chat("openai/fake-text")),
        ),
        "rate_limit_error",
        None,
    ),
    "quota_exceeded": (
        Case(
            "quota_exceeded",
            429,
            over_limit("spent", "/v1/chat/completions", chat("openai/fake-text")),
        ),
        "rate_limit_error",
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(KLAI))
async def test_klai_routes_answer_every_error_kind_in_klais_types(stack: Stack, name: str) -> None:
    case = KLAI[name]
    r = await case.provoke(stack)
    assert r.status_code == case.status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["success"] is False, body
    error = body["error"]
    assert error["type"] == case.kind, body
    assert type(error["code"]) is int and error["code"] == (case.code or case.status), body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["details"], str), body
    assert ("fields" in error) is case.fields, body
    if case.fields:
        assert all(isinstance(p["field"], str) for p in error["fields"]), body
        assert all(p["field"] in error["details"] for p in error["fields"]), body
    assert set(error) <= {"message", "code", "details", "type", "fields"}, body
    assert "Traceback" not in r.text
    assert ("retry-after" in r.headers) is (case.status == 429), r.headers


@pytest.mark.parametrize("name", sorted(OPENAI))
async def test_the_openai_face_answers_every_error_kind_in_openais_shape(
    stack: Stack, name: str
) -> None:
    case, openai_type, param = OPENAI[name]
    r = await case.provoke(stack)
    assert r.status_code == case.status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    assert (error["type"], error["code"], error["param"]) == (openai_type, case.kind, param), body
    assert ("retry-after" in r.headers) is (case.status == 429), r.headers


def error_kinds() -> set[str]:
    """Every `kind` of the one error tree."""
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)]
    return {c.kind for c in classes if issubclass(c, errors.ProxyError)}


def test_the_tables_cover_every_error_kind_the_product_can_answer() -> None:
    answered = {case.kind for case in KLAI.values()}
    assert answered | set(NOT_PROVOKABLE) == error_kinds() | {"method_not_allowed"}
    assert not answered & set(NOT_PROVOKABLE)
    # /v1 has no subscribe tokens, tool answers, Assistants or provider keys, and a model
    # whose prefix is no provider goes whole to the default one (OpenRouter-style names):
    # Klai-only kinds.
    klai_only = {
        "forbidden",
        "conflict",
        "unknown_provider",
        "provider_key_refused",
    }
    assert {case.kind for case, _, _ in OPENAI.values()} == answered - klai_only
