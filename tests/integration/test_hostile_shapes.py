"""Hostile shapes at the HTTP edge: a content part whose `type` or image media type is a
list or an object (an unhashable value once took the request to a 500, and the server then
dropped the connection, failing the client's next request on it too), and paths with a
trailing slash (a bodiless redirect before, not the contract's 404)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Stack

IMAGE = "iVBORw0KGgo="  # base64 of a PNG signature: valid base64, the check that matters here

BAD_PARTS: dict[str, Any] = {
    "type a list": {"type": ["text"], "text": "x"},
    "type an object": {"type": {}, "text": "x"},
    "gemini mimeType a list": {"inlineData": {"mimeType": ["image/png"], "data": IMAGE}},
    "anthropic media_type an object": {
        "type": "image",
        "source": {"type": "base64", "media_type": {"x": 1}, "data": IMAGE},
    },
}


@pytest.mark.parametrize("part", list(BAD_PARTS.values()), ids=list(BAD_PARTS))
@pytest.mark.parametrize("path", ["/llm/query", "/stream/create"])
async def test_a_part_of_the_wrong_type_is_a_400_and_the_connection_serves_on(
    stack: Stack, path: str, part: Any
) -> None:
    payload = {"provider": "mock", "stream": False}
    payload["messages"] = [{"role": "user", "content": [part]}]
    headers = {"x-api-key": stack.api_key}
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        bad = await client.post(path, json={"actionName": "a", "payload": payload}, headers=headers)
        assert bad.status_code == 400, bad.text
        error = bad.json()["error"]
        assert error["type"] == "invalid_request"
        assert error["fields"][0]["field"].startswith("payload.messages.0.content.0")
        # The same keep-alive connection answers the next request.
        payload["messages"] = [{"role": "user", "content": "fine"}]
        good = await client.post(
            path, json={"actionName": "a", "payload": payload}, headers=headers
        )
        assert good.status_code == 200, good.text


@pytest.mark.parametrize("part", list(BAD_PARTS.values()), ids=list(BAD_PARTS))
async def test_the_openai_sdk_gets_a_bad_request_error_it_can_read(stack: Stack, part: Any) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack.http}/v1", api_key=stack.api_key, max_retries=0)
    try:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="mock/echo", messages=[{"role": "user", "content": [part]}]
            )
        answer = await client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "fine"}]
        )
        assert answer.choices[0].message.content
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("method", "path", "shape"),
    [
        ("POST", "/llm/query/", "klai"),
        ("POST", "/llm/query/stop/", "klai"),
        ("POST", "/v1/chat/completions/", "openai"),
        ("GET", "/v1/models/", "openai"),
    ],
)
async def test_a_trailing_slash_is_a_404_in_the_routes_own_shape(
    stack: Stack, method: str, path: str, shape: str
) -> None:
    headers = {"x-api-key": stack.api_key, "authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.request(method, path, json={}, headers=headers)
    assert r.status_code == 404, (r.status_code, r.headers)
    body = r.json()
    if shape == "openai":
        assert body["error"]["code"] is None or isinstance(body["error"]["code"], str)
        assert "message" in body["error"] and "success" not in body
    else:
        assert body["success"] is False and body["error"]["code"] == 404
