"""No secret ever leaves: providers that echo the request (keys and all) in their errors,
before the first byte and mid-stream, through every answer mode. No configured key, and no
`payload.apiKey`, may appear in any HTTP body or header, SSE frame, WebSocket message or
log line; what reaches the caller is the provider's message, bounded, or a generic text.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from streaming_proxy.redact import REDACTED
from tests.conftest import (
    FAKE_ANTHROPIC_KEY,
    FAKE_COMPAT_KEY,
    FAKE_OPENAI_KEY,
    Stack,
    sse_query,
)
from tests.delivery import covered
from tests.fake_llm import echoed_key_text
from tests.wsclient import Subscriber

REQUEST_KEY = "fake-request-provider-key-7f3a9c21"
SECRETS = [FAKE_OPENAI_KEY, FAKE_ANTHROPIC_KEY, FAKE_COMPAT_KEY, REQUEST_KEY]

# (provider, the key it uses: the server's unless the request brings one)
PROVIDERS = [
    ("openai", None),
    ("openai", REQUEST_KEY),
    ("fakecompat", None),
    ("anthropic", None),
    ("anthropic", REQUEST_KEY),
]


SERVER_KEYS = {
    "openai": FAKE_OPENAI_KEY,
    "anthropic": FAKE_ANTHROPIC_KEY,
    "fakecompat": FAKE_COMPAT_KEY,
}


def assert_echo_redacted(text: str, key: str) -> None:
    """`text` is the fake's echo with each `key` replaced, after at most the 3 characters
    that left before the rest of the key arrived (textguard.py)."""
    pattern = re.escape(echoed_key_text("KEYHERE")).replace(
        "KEYHERE", "(.{0,3})" + re.escape(REDACTED)
    )
    match = re.fullmatch(pattern, text)
    assert match is not None, text
    assert all(key.startswith(opening) for opening in match.groups())


async def sse_and_channel(
    stack: Stack, channel: str, request: dict[str, Any]
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """POST /llm/query as SSE with a subscriber on `channel`: the SSE lines, the SSE
    events and what the subscriber got of the stream."""
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        async with sse_query(stack, request) as r:
            assert r.status_code == 200
            frames = [line async for line in r.aiter_lines()]
        events = [json.loads(line[6:]) for line in frames if line.startswith("data: ")]
        return frames, events, await sub.stream(events[0]["streamId"])
    finally:
        await sub.close()


def body(channel: str, provider: str, key: str | None, model: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
    }
    if key:
        payload["apiKey"] = key
    return {"channels": [channel], "actionName": "onSecret", "payload": payload}


def assert_clean(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, (
                f"secret leaked: ...{text[max(0, text.find(secret) - 80) :][:200]}"
            )


@pytest.mark.parametrize(("provider", "key"), PROVIDERS)
@pytest.mark.parametrize("model", ["fake-echo-json", "fake-echo-html", "fake-echo-text"])
async def test_an_echoing_error_before_the_first_byte_never_reaches_anyone(
    stack: Stack, provider: str, key: str | None, model: str
) -> None:
    channel = f"secret-{provider}-{model}"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        async with httpx.AsyncClient(
            base_url=stack.http, timeout=30, headers={"x-api-key": stack.api_key}
        ) as client:
            acked = await client.post("/llm/query", json=body(channel, provider, key, model))
            sse = await client.post(
                "/llm/query",
                json=body(channel, provider, key, model),
                headers={"accept": "text/event-stream"},
            )
        for answer in (acked, sse):
            assert answer.status_code in (400, 502), answer.text
            error = answer.json()["error"]
            assert "<" not in error["message"]  # never raw HTML
            assert len(error["message"]) <= 600
            assert_clean(answer.text, json.dumps(dict(answer.headers)))
        if model == "fake-echo-json":
            assert "bad request" in acked.json()["error"]["message"]
        assert [m for m in sub.messages if m.get("actionName") == "onSecret"] == []
    finally:
        await sub.close()
    assert_clean(stack.logs())


@pytest.mark.parametrize(("provider", "key"), PROVIDERS)
async def test_an_echoing_error_mid_stream_is_scrubbed_on_sse_and_every_channel(
    stack: Stack, provider: str, key: str | None
) -> None:
    channel = f"secret-mid-{provider}-{bool(key)}"
    frames, events, messages = await sse_and_channel(
        stack, channel, body(channel, provider, key, "fake-echo-stream")
    )
    for seen in (events, messages):
        error = next(m for m in seen if m["type"] == "error")
        assert "failed on" in error["error"]["message"]  # the provider's message, cut
        assert seen[-1]["type"] == "end" and seen[-1]["finish_reason"] == "error"
    assert_clean("\n".join(frames), json.dumps(messages))
    assert_clean(stack.logs())


@pytest.mark.parametrize("model", ["openai/fake-echo-json", "fakecompat/fake-echo-stream"])
async def test_the_openai_face_scrubs_echoed_keys_too(stack: Stack, model: str) -> None:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        answers = [
            await client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "x"}], **extra},
                headers={"authorization": f"Bearer {stack.api_key}"},
            )
            for extra in ({}, {"stream": True})
        ]
    for answer in answers:
        assert_clean(answer.text)
        assert "error" in answer.text
    assert_clean(stack.logs())


@pytest.mark.parametrize(("provider", "key"), PROVIDERS)
async def test_a_key_the_model_repeats_in_its_answer_is_replaced_however_it_is_cut(
    stack: Stack, provider: str, key: str | None
) -> None:
    """The fake says the key it was sent, twice, in 5-character pieces (and in its reasoning,
    on Anthropic): the caller, every subscriber and the logs get it replaced."""
    channel = f"secret-text-{provider}-{bool(key)}"
    frames, events, messages = await sse_and_channel(
        stack, channel, body(channel, provider, key, "fake-echo-key-text")
    )
    for seen in (events, messages):
        text = "".join(m["content"] for m in seen if m["type"] == "delta")
        assert_echo_redacted(text, key or SERVER_KEYS[provider])
        thinking = "".join(m["content"] for m in seen if m["type"] == "thinking")
        assert (REDACTED in thinking) == (provider == "anthropic")
        assert seen[-1]["type"] == "end" and seen[-1]["finish_reason"] == "stop"
        assert covered(seen) == list(range(seen[-1]["seq"] + 1))
    assert_clean("\n".join(frames), json.dumps(messages))
    assert_clean(stack.logs())


@pytest.mark.parametrize("model", ["openai/fake-echo-key-text", "fakecompat/fake-echo-key-text"])
async def test_the_openai_face_replaces_a_key_in_the_answer_too(stack: Stack, model: str) -> None:
    request = {"model": model, "messages": [{"role": "user", "content": "x"}]}
    headers = {"authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        whole = await client.post("/v1/chat/completions", json=request, headers=headers)
        streamed = await client.post(
            "/v1/chat/completions", json={**request, "stream": True}, headers=headers
        )
    key = SERVER_KEYS[model.split("/")[0]]
    assert_echo_redacted(whole.json()["choices"][0]["message"]["content"], key)
    chunks = [
        json.loads(line[6:])
        for line in streamed.text.splitlines()
        if line.startswith("data: {") and '"choices": [{' in line.replace('":[{', '": [{')
    ]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert_echo_redacted(text, key)
    assert_clean(whole.text, streamed.text, stack.logs())


@pytest.mark.parametrize(("provider", "key"), PROVIDERS)
async def test_the_raw_response_holds_no_key_the_model_streamed_in_pieces(
    stack: Stack, provider: str, key: str | None
) -> None:
    """`options.rawResponse` gives the provider's own frames: the key the model said in
    5-character pieces is whole in them once their texts are joined, and must not be."""
    request = body(f"secret-raw-{provider}", provider, key, "fake-echo-key-text")
    request.pop("channels", None)
    request["payload"]["stream"] = False
    request["options"] = {"rawResponse": True}
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.post("/llm/query", json=request, headers={"x-api-key": stack.api_key})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert_echo_redacted(data["choices"][0]["message"]["content"], key or SERVER_KEYS[provider])
    rounds = data["raw_response"]["rounds"]
    assert len(rounds) == 1 and len(rounds[0]) > 10  # the frames, each kept
    assert REDACTED in json.dumps(rounds)
    assert_clean(r.text, stack.logs())
