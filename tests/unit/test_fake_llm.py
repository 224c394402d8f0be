"""The fake upstream's Gemini route serves the named scripts, read by the real adapter."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr

from streaming_proxy.config import Settings
from streaming_proxy.errors import UpstreamError
from streaming_proxy.events import Finish, ProviderEvent, TextDelta, ToolCallDelta, Usage
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.gemini import GeminiProvider
from tests.fake_llm import TEXT, TOOL_ARGS, FakeLlm

SETTINGS = Settings(gemini_api_key=SecretStr("g-key"), gemini_base_url="http://fake/v1beta")


async def gemini(model: str) -> tuple[FakeLlm, list[ProviderEvent]]:
    fake = FakeLlm()
    transport = httpx.ASGITransport(app=fake.app())
    async with httpx.AsyncClient(transport=transport) as http:
        adapter = GeminiProvider(http, SETTINGS, call_id=lambda n: f"call_{n}")
        request = LlmRequest(model=model, messages=[{"role": "user", "content": "Hi"}])
        return fake, [event async for event in adapter.stream(request)]


@pytest.mark.parametrize(("model", "usage"), [("fake-text", [Usage(12, 30)]), ("fake-nousage", [])])
async def test_text_streams_word_by_word(model: str, usage: list[Usage]) -> None:
    fake, events = await gemini(model)

    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == TEXT
    assert [e for e in events if isinstance(e, Usage)] == usage
    assert events[-1] == Finish("stop")
    assert fake.last(":streamGenerateContent").headers["x-goog-api-key"] == "g-key"


async def test_tools_asks_for_the_weather() -> None:
    _, events = await gemini("fake-tools")

    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls == [ToolCallDelta(0, id="call_0", name="get_weather", arguments=TOOL_ARGS)]
    assert json.loads(calls[0].arguments)["city"] == "Amsterdam"
    assert events[-1] == Finish("tool_calls")


async def test_error_fails_mid_stream_with_the_models_message() -> None:
    with pytest.raises(UpstreamError, match="the fake model fell over"):
        await gemini("fake-error")
