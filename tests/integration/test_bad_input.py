"""Hostile and broken input through the real stack: always a clear 4xx in the contract's
shape, never a 5xx, never a stall of other streams, never an echo of what was sent."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from streaming_proxy.api.app import create_app
from streaming_proxy.auth import key_digest
from streaming_proxy.config import Settings
from streaming_proxy.service import StreamService
from tests.conftest import Stack

MESSAGES = [{"role": "user", "content": "hi"}]


def query(channels: Any = ("room",), action: Any = "onLlm", **payload: Any) -> dict[str, Any]:
    return {
        "channels": list(channels) if isinstance(channels, tuple) else channels,
        "actionName": action,
        "payload": {"provider": "mock", "messages": MESSAGES, **payload},
    }


def post(stack: Stack, path: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return httpx.post(
        f"{stack.http}{path}",
        content=content,
        headers={"x-api-key": stack.api_key, "content-type": "application/json", **headers},
        timeout=30,
    )


def assert_klai_error(r: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """Klai's error answer: `code` the status (a number), `details` a string, and our
    machine-readable `type`."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    error = body["error"]
    assert body["success"] is False and error["type"] == kind, body
    assert error["code"] == status and type(error["code"]) is int, body
    assert isinstance(error["message"], str) and isinstance(error["details"], str), body
    assert "Traceback" not in r.text
    return dict(error)


def test_invalid_fields_are_a_400_naming_each_field_in_details_and_fields(stack: Stack) -> None:
    body = query(messages="hello")
    body["options"] = {"flushIntervalMs": 5000}
    error = assert_klai_error(post(stack, "/llm/query", body), 400, "invalid_request")
    named = {problem["field"] for problem in error["fields"]}
    assert {"payload.messages", "options.flushIntervalMs"} <= named, error
    assert all(isinstance(p["message"], str) and p["message"] for p in error["fields"])
    assert error["details"] == "; ".join(f"{p['field']}: {p['message']}" for p in error["fields"])
    # Without field problems there is no `fields`, and `details` may be empty.
    plain = assert_klai_error(post(stack, "/llm/query", b"[1]"), 400, "bad_request")
    assert "fields" not in plain


def test_unknown_paths_and_methods_answer_in_the_contracts_shape(stack: Stack) -> None:
    missing = httpx.get(f"{stack.http}/no/such/path", timeout=10)
    assert_klai_error(missing, 404, "not_found")
    wrong = httpx.get(f"{stack.http}/llm/query", timeout=10)
    assert_klai_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_a_400(stack: Stack, depth: int) -> None:
    nested = '{"a":' * depth + "1" + "}" * depth
    body = '{"channels":["room"],"actionName":"a","payload":' + nested + "}"
    error = assert_klai_error(post(stack, "/llm/query", body), 400, "bad_request")
    assert "nests deeper" in error["message"]


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("actionName", '{"channels":["room"],"actionName":"on\\ud800","payload":{}}'),
        ("channels.0", '{"channels":["ro\\udc00m"],"actionName":"a","payload":{}}'),
        ("payload", '{"channels":["room"],"actionName":"a","payload":{"\\ud83d":1}}'),
        ("payload.messages.0.content", json.dumps(query()).replace('"hi"', '"h\\ud800i"')),
    ],
)
def test_a_lone_surrogate_anywhere_in_the_body_is_a_400(
    stack: Stack, where: str, body: str
) -> None:
    error = assert_klai_error(post(stack, "/llm/query", body), 400, "bad_request")
    assert "not valid Unicode" in error["message"]


async def test_ten_thousand_channels_are_refused_at_once_and_stall_no_other_stream(
    stack: Stack,
) -> None:
    text = " ".join(f"w{i}" for i in range(40))
    async with httpx.AsyncClient(
        base_url=stack.http, headers={"x-api-key": stack.api_key}, timeout=30
    ) as client:
        healthy = asyncio.create_task(
            client.post(
                "/llm/query",
                json=query(providerArgs={"text": text, "delayMs": 10}),
                headers={"accept": "text/event-stream"},
            )
        )
        started = time.monotonic()
        flood = await client.post("/llm/query", json=query([f"c{i}" for i in range(10_000)]))
        refused_in = time.monotonic() - started
        done = await healthy
    error = assert_klai_error(flood, 400, "invalid_request")
    assert "at most 50 channels" in error["message"]
    assert refused_in < 5
    assert done.status_code == 200 and "event: end" in done.text


def test_about_440_kb_of_channel_names_is_a_4xx_not_a_500(stack: Stack) -> None:
    body = query([f"{i:05d}" + "x" * 250 for i in range(1_700)])
    r = post(stack, "/llm/query", body)
    assert r.status_code in (400, 413), r.text
    assert r.json()["success"] is False


@pytest.mark.parametrize("channel", ["", " ", "a b", "x" * 257, "tab\n1", "é" * 300])
def test_bad_channel_names_are_refused_on_every_route(stack: Stack, channel: str) -> None:
    assert_klai_error(post(stack, "/llm/query", query([channel])), 400, "invalid_request")
    assert_klai_error(post(stack, "/stream/create", query([channel])), 400, "invalid_request")
    token = post(stack, "/channels/token", {"channels": [channel]})
    assert_klai_error(token, 400, "invalid_request")
    face = post(
        stack,
        "/v1/chat/completions",
        {"model": "mock/echo", "messages": MESSAGES, "channels": [channel], "actionName": "a"},
    )
    # OpenAI's shape and status for an invalid request: 400, invalid_request_error.
    assert face.status_code == 400 and face.json()["error"]["type"] == "invalid_request_error"
    assert face.json()["error"]["param"] == "channels.0"


def test_the_openai_face_caps_channels_named_in_its_header_too(stack: Stack) -> None:
    many = ",".join(f"h{i}" for i in range(51))
    r = post(
        stack,
        "/v1/chat/completions",
        {"model": "mock/echo", "messages": MESSAGES},
        **{"x-channels": many, "x-action-name": "a"},
    )
    assert r.status_code == 400 and "at most 50 channels" in r.json()["error"]["message"]
    long_name = post(
        stack,
        "/v1/chat/completions",
        {"model": "mock/echo", "messages": MESSAGES},
        **{"x-channels": "y" * 3000, "x-action-name": "a"},
    )
    assert long_name.status_code == 400


@pytest.mark.parametrize("header", ["on Llm", "x" * 201, "on\tLlm", ""])
@pytest.mark.parametrize("in_body", [False, True])
def test_an_x_action_name_header_outside_its_rule_is_a_400_even_beside_the_body(
    stack: Stack, header: str, in_body: bool
) -> None:
    body: dict[str, object] = {"model": "mock/echo", "messages": MESSAGES}
    if in_body:
        body["actionName"] = "onLlm"
    r = post(stack, "/v1/chat/completions", body, **{"x-action-name": header})
    assert r.status_code == 400 and "X-Action-Name" in r.json()["error"]["message"]


@pytest.mark.parametrize("key", ["abc\r\nX-Injected: 1", "clé-non-ascii", "with space"])
def test_a_provider_key_that_cannot_be_a_header_is_a_400_never_echoed(
    stack: Stack, key: str
) -> None:
    r = post(stack, "/llm/query", query(apiKey=key, provider="openai", model="gpt-x"))
    error = assert_klai_error(r, 400, "invalid_request")
    assert "apiKey" in error["message"]
    assert key not in r.text and "Injected" not in r.text


def test_private_tab_channels_cannot_be_granted_by_a_token(stack: Stack) -> None:
    r = post(stack, "/channels/token", {"channels": ["ok", "tab|SomeConnection="]})
    assert_klai_error(r, 403, "forbidden")


@pytest.mark.parametrize("ttl", [True, "60", 1.5, 0])
def test_a_token_ttl_that_is_not_a_positive_integer_is_a_400(stack: Stack, ttl: object) -> None:
    # `true` was read as 1: a one-second token, which failed at connect.
    r = post(stack, "/channels/token", {"channels": ["ok"], "ttl": ttl})
    error = assert_klai_error(r, 400, "invalid_request")
    assert [f["field"] for f in error["fields"]] == ["ttl"]


@pytest.mark.parametrize("path", ["/stream/create/assistants", "/stream/create/assistants/stop"])
def test_the_assistants_routes_authenticate_before_reading_the_body(
    stack: Stack, path: str
) -> None:
    anonymous = httpx.post(f"{stack.http}{path}", json={}, timeout=10)
    assert_klai_error(anonymous, 401, "unauthorized")
    assert_klai_error(post(stack, path, {}), 400, "invalid_request")


async def test_dynamodb_unavailable_at_register_is_a_clear_503(tmp_path: Path) -> None:
    settings = Settings(
        aws_region="us-east-1",
        dynamodb_endpoint_url="http://127.0.0.1:9",  # nothing listens there
        apps={"app1": {"keySha256": key_digest("app-key"), "tokenSecret": "s" * 32}},
        ws_management_endpoint="http://127.0.0.1:9/dev",
    )
    app = create_app(settings)
    service = StreamService(settings)
    app.state.service = service
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        r = await c.post("/llm/query", json=query(), headers={"x-api-key": "app-key"})
    await service.aclose()
    error = assert_klai_error(r, 503, "dependency_unavailable")
    assert "DynamoDB" in error["message"] and "try again" in error["message"]


@pytest.mark.parametrize("path", ["/llm/query", "/stream/create", "/v1/chat/completions"])
def test_a_model_name_over_256_characters_is_a_400_naming_the_model(
    stack: Stack, path: str
) -> None:
    """A model's name reaches the provider's URL or body and every stream's records: it is
    bounded like every other field, on each face (with a provider's prefix on `/v1`)."""
    longest, over = "m" * 256, "m" * 257
    if path == "/v1/chat/completions":
        bodies = [{"model": f"mock/{name}", "messages": MESSAGES} for name in (longest, over)]
    else:
        bodies = [{**query(model=name), "actionName": "onChat"} for name in (longest, over)]
    assert post(stack, path, bodies[0]).status_code == 200
    refused = post(stack, path, bodies[1])
    assert refused.status_code == 400, refused.text
    assert "model" in refused.text and "Traceback" not in refused.text
