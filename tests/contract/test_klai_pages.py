"""Conformance: every request example of the Klai Chat, LLM Query and stop pages
(tests/contract/fixtures/, one JSON file per example, bodies as the pages show them) is
accepted by the real stack with Klai's answer, and the fake upstream received exactly the
provider-native body written in the fixture beside it (`received`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.fake_llm import FakeLlm

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.json"))
# Gemini has no server key in the test stack: examples bring one (not credential-shaped).
GEMINI_KEY = "request-gemini-key-" + "0" * 12
STOP_CHANNEL = "pages-stop"


def load(path: Path) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return fixture


def filled(request: Any, values: dict[str, str]) -> Any:
    """The example with its placeholders (`{{appKey}}`, ...) replaced by the test's values."""
    text = json.dumps(request)
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    assert "{{" not in text, f"unfilled placeholder in {text}"
    return json.loads(text)


def running_stream(stack: Stack) -> str:
    """A slow stream on STOP_CHANNEL, still running when the stop example is sent."""
    body = {
        "channels": [STOP_CHANNEL],
        "actionName": "onLlmMessage",
        "payload": {
            "provider": "openai",
            "model": "fake-slow",
            "stream": True,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
        },
    }
    r = httpx.post(
        f"{stack.http}/llm/query", json=body, headers={"x-api-key": stack.api_key}, timeout=30
    )
    assert r.status_code == 200, r.text
    return str(r.json()["streamId"])


def assert_completion(data: dict[str, Any]) -> None:
    """The provider-shaped whole answer (OpenAI `chat.completion`) Klai documents."""
    assert data["object"] == "chat.completion" and isinstance(data["id"], str)
    assert isinstance(data["created"], int) and data["model"] == "fake-text"
    [choice] = data["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def assert_answer(fixture: dict[str, Any], request: dict[str, Any], r: httpx.Response) -> None:
    """The documented answer of the example's page, for its kind."""
    assert r.status_code == 200, r.text
    body = r.json()
    kind, endpoint = fixture["answer"], fixture["endpoint"]
    if kind == "streaming" and endpoint == "/stream/create":
        assert body["success"] is True and body["message"] == "Streaming setup complete"
        assert body["streamId"].startswith("st_")
    elif kind == "streaming":
        assert body["success"] is True
        assert body["data"]["message"] == "Streaming setup complete"
        assert body["streamId"].startswith("st_")
    elif kind in ("completion", "query_result", "query_result_raw"):
        assert body["success"] is True
        assert body["actionName"] == request.get("actionName", "")
        assert_completion(body["data"])
        assert ("raw_response" in body["data"]) is (kind == "query_result_raw")
        if kind == "query_result_raw":
            assert body["data"]["raw_response"]["provider"] == request["payload"]["provider"]
    else:
        assert kind in ("stopped", "not_found"), kind
        assert body["status"] == kind and body["streamId"] == request["streamId"]


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_a_klai_page_example_is_accepted_and_reaches_the_provider_as_written(
    stack: Stack, fake_llm: FakeLlm, path: Path
) -> None:
    fixture = load(path)
    values = {"appKey": stack.api_key, "geminiKey": GEMINI_KEY}
    if fixture["endpoint"] == "/llm/query/stop":
        values["streamId"] = running_stream(stack)
        values["subscribeToken"] = stack.token(STOP_CHANNEL)
    request = filled(fixture["request"], values)
    before = len(fake_llm.requests)
    r = httpx.post(f"{stack.http}{fixture['endpoint']}", json=request, timeout=30)
    assert_answer(fixture, request, r)
    if "received" not in fixture:
        return
    # A streamed example answers before the provider is called: wait for its one request.
    deadline = time.monotonic() + 10
    while len(fake_llm.requests) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    [recorded] = fake_llm.requests[before:]
    assert recorded.path == fixture["received"]["path"]
    assert recorded.body == fixture["received"]["body"]
    if request["payload"]["provider"] == "gemini":
        # The request's own Gemini key goes to Gemini in its header, never in the body.
        assert recorded.headers["x-goog-api-key"] == GEMINI_KEY


def test_every_page_and_endpoint_has_examples() -> None:
    fixtures = [load(path) for path in FIXTURES]
    assert {(f["page"], f["endpoint"]) for f in fixtures} == {
        ("chat", "/stream/create"),
        ("llm_query", "/llm/query"),
        ("llm_query_stop", "/llm/query/stop"),
    }
    names = [f["page"] + "__" + f["example"] for f in fixtures]
    assert names == [path.stem for path in FIXTURES]
    providers = {f["request"]["payload"]["provider"] for f in fixtures if "payload" in f["request"]}
    assert providers == {"openai", "azure", "fakecompat", "anthropic", "gemini", "bedrock"}
