"""The OpenAI face translates Chat Completions fields for each provider (never passes them
through to a provider that would refuse them), lists models, and answers unknown /v1 paths
in OpenAI's shape: the official `openai` SDK as the client, the fake upstream as provider."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import Stack
from tests.contract.test_sampling import PATHS, query, sent
from tests.fake_llm import TOOL_ARGS, FakeLlm

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True},
}
# Gemini has no server key in the test stack and the OpenAI face carries no provider key:
# its translations are checked through the Klai face, which reads the same fields.
SDK_PROVIDERS = ("openai", "azure", "fakecompat", "anthropic", "bedrock")
HI = [{"role": "user", "content": "Hi"}]


def client(stack: Stack, api_key: str | None = None) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=f"{stack.http}/v1", api_key=api_key or stack.api_key, max_retries=0, timeout=30
    )


async def complete(stack: Stack, provider: str, **fields: Any) -> Any:
    return await client(stack).chat.completions.create(
        model=f"{provider}/fake-text", messages=HI, **fields
    )


def translated(fake_llm: FakeLlm, stack: Stack, provider: str, **fields: Any) -> dict[str, Any]:
    """For Gemini: the same fields through the Klai face (payload top level), then the body."""
    r = query(stack, provider, **fields)
    assert r.status_code == 200, r.text
    return sent(fake_llm, provider)


def forced_tool(body: dict[str, Any], provider: str) -> tuple[Any, Any]:
    """(the tool definitions, the tool choice) a JSON answer was forced with."""
    if provider == "anthropic":
        return body["tools"], body["tool_choice"]
    return body["toolConfig"]["tools"], body["toolConfig"]["toolChoice"]


@pytest.mark.parametrize("provider", SDK_PROVIDERS)
async def test_response_format_json_schema(stack: Stack, fake_llm: FakeLlm, provider: str) -> None:
    await complete(stack, provider, response_format=RESPONSE_FORMAT)
    body = sent(fake_llm, provider)
    if provider in ("openai", "azure", "fakecompat"):
        assert body["response_format"] == RESPONSE_FORMAT
    elif provider == "anthropic":
        [tool], choice = forced_tool(body, provider)
        assert (tool["name"], tool["input_schema"]) == ("weather", SCHEMA)
        assert choice == {"type": "tool", "name": "weather"}
    else:
        [tool], choice = forced_tool(body, provider)
        assert (tool["toolSpec"]["name"], tool["toolSpec"]["inputSchema"]) == (
            "weather",
            {"json": SCHEMA},
        )
        assert choice == {"tool": {"name": "weather"}}
    assert "response_format" not in body or provider in ("openai", "azure", "fakecompat")


def test_response_format_json_schema_for_gemini(stack: Stack, fake_llm: FakeLlm) -> None:
    config = translated(fake_llm, stack, "gemini", response_format=RESPONSE_FORMAT)[
        "generationConfig"
    ]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == SCHEMA


async def test_a_forced_json_answer_comes_back_as_the_message_text(stack: Stack) -> None:
    """The fake's `fake-tools` model answers with a tool call: the JSON answer's tool."""
    answer = await client(stack).chat.completions.create(
        model="anthropic/fake-tools", messages=HI, response_format=RESPONSE_FORMAT
    )
    choice = answer.choices[0]
    assert choice.message.content == TOOL_ARGS and choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert json.loads(choice.message.content)["city"] == "Amsterdam"


# Where `stop: ["END"]` and `max_completion_tokens: 99` land in each provider's body.
STOP_AND_MAX = {
    "openai": lambda b: (b["stop"], b["max_completion_tokens"]),
    "azure": lambda b: (b["stop"], b["max_completion_tokens"]),
    "fakecompat": lambda b: (b["stop"], b["max_tokens"]),
    "anthropic": lambda b: (b["stop_sequences"], b["max_tokens"]),
    "gemini": lambda b: (
        b["generationConfig"]["stopSequences"],
        b["generationConfig"]["maxOutputTokens"],
    ),
    "bedrock": lambda b: (b["inferenceConfig"]["stopSequences"], b["inferenceConfig"]["maxTokens"]),
}


@pytest.mark.parametrize("provider", SDK_PROVIDERS)
async def test_stop_and_max_completion_tokens(
    stack: Stack, fake_llm: FakeLlm, provider: str
) -> None:
    await complete(stack, provider, stop=["END"], max_completion_tokens=99)
    assert STOP_AND_MAX[provider](sent(fake_llm, provider)) == (["END"], 99)
    await complete(stack, provider, stop="END", max_tokens=99)
    assert STOP_AND_MAX[provider](sent(fake_llm, provider)) == (["END"], 99)


def test_stop_and_max_completion_tokens_for_gemini(stack: Stack, fake_llm: FakeLlm) -> None:
    body = translated(fake_llm, stack, "gemini", stop=["END"], max_completion_tokens=99)
    assert STOP_AND_MAX["gemini"](body) == (["END"], 99)


@pytest.mark.parametrize("provider", SDK_PROVIDERS)
async def test_reasoning_effort(stack: Stack, fake_llm: FakeLlm, provider: str) -> None:
    await complete(stack, provider, reasoning_effort="low", max_completion_tokens=500)
    body = sent(fake_llm, provider)
    if provider in ("openai", "azure", "fakecompat"):
        assert body["reasoning_effort"] == "low"
    elif provider == "anthropic":
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        assert body["max_tokens"] == 500 + 1024  # max_tokens must exceed the budget
    else:
        fields = body["additionalModelRequestFields"]
        assert fields["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        assert body["inferenceConfig"]["maxTokens"] == 500 + 1024


def test_reasoning_effort_for_gemini(stack: Stack, fake_llm: FakeLlm) -> None:
    body = translated(fake_llm, stack, "gemini", reasoning_effort="high")
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576}


async def test_user_and_parallel_tool_calls(stack: Stack, fake_llm: FakeLlm) -> None:
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    await complete(stack, "anthropic", user="u-42", tools=tools, parallel_tool_calls=False)
    body = sent(fake_llm, "anthropic")
    assert body["metadata"] == {"user_id": "u-42"}
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    await complete(stack, "openai", user="u-42", tools=tools, parallel_tool_calls=False)
    assert (
        sent(fake_llm, "openai").items() >= {"user": "u-42", "parallel_tool_calls": False}.items()
    )
    await complete(stack, "bedrock", user="u-42")
    assert sent(fake_llm, "bedrock")["requestMetadata"] == {"user": "u-42"}


async def refused(stack: Stack, fake_llm: FakeLlm, provider: str, param: str, **fields: Any) -> str:
    """A 400 in OpenAI's shape naming `param`, and nothing sent upstream."""
    before = len(fake_llm.requests)
    with pytest.raises(openai.BadRequestError) as raised:
        await complete(stack, provider, **fields)
    error = raised.value
    assert error.status_code == 400
    assert isinstance(error.body, dict)
    assert error.body["type"] == "invalid_request_error" and error.body["param"] == param
    assert len(fake_llm.requests) == before
    return str(error.body["message"])


@pytest.mark.parametrize("provider", [*SDK_PROVIDERS, "gemini"])
async def test_more_than_one_choice_is_a_400(
    stack: Stack, fake_llm: FakeLlm, provider: str
) -> None:
    if provider == "gemini":
        r = query(stack, "gemini", n=3)
        assert r.status_code == 400 and "payload.n" in r.text
        return
    assert "one choice" in await refused(stack, fake_llm, provider, "n", n=2)


async def test_fields_a_provider_cannot_take_are_a_400_naming_them(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    message = await refused(stack, fake_llm, "anthropic", "seed", seed=1)
    assert "anthropic" in message
    await refused(stack, fake_llm, "bedrock", "presence_penalty", presence_penalty=0.5)
    await refused(stack, fake_llm, "openai", "top_k", extra_body={"top_k": 3})
    # A field that is no setting: native for Chat Completions providers, a 400 elsewhere.
    await refused(stack, fake_llm, "anthropic", "logprobs", logprobs=True)
    await complete(stack, "fakecompat", logprobs=True)
    assert sent(fake_llm, "fakecompat")["logprobs"] is True
    message = await refused(
        stack,
        fake_llm,
        "openai",
        "providerArgs.maxTokens",
        max_tokens=5,
        extra_body={"providerArgs": {"maxTokens": 6}},
    )
    assert "max_tokens" in message
    await refused(stack, fake_llm, "openai", "temperature", temperature="hot")  # type: ignore[arg-type]


async def test_models_lists_the_configured_providers_models(stack: Stack) -> None:
    page = await client(stack).models.list()
    listed = {(model.id, model.owned_by) for model in page.data}
    # Gemini has MODELS but no server key here; azure and bedrock have no MODELS entry.
    assert listed == {
        ("openai/gpt-4o-mini", "openai"),
        ("anthropic/claude-sonnet-4-5", "anthropic"),
        ("fakecompat/llama3", "fakecompat"),
        ("mock/echo", "mock"),
    }
    assert all(model.object == "model" and model.created == 0 for model in page.data)
    with pytest.raises(openai.AuthenticationError):
        await client(stack, api_key="wrong-app-key").models.list()


async def test_a_listed_model_id_is_what_chat_completions_takes(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    page = await client(stack).models.list()
    anthropic = next(model.id for model in page.data if model.owned_by == "anthropic")
    await client(stack).chat.completions.create(model=anthropic, messages=HI)
    assert sent(fake_llm, "anthropic")["model"] == "claude-sonnet-4-5"
    assert PATHS["anthropic"] == fake_llm.requests[-1].path


async def test_an_unknown_v1_path_raises_the_sdks_not_found_error(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await client(stack).models.retrieve("openai/gpt-4o-mini")
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["type"] == "not_found_error"


def test_wrong_methods_and_unknown_v1_paths_are_openai_errors(stack: Stack) -> None:
    r = httpx.get(f"{stack.http}/v1/chat/completions", timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "method_not_allowed"
    unknown = httpx.post(f"{stack.http}/v1/embeddings", json={}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
