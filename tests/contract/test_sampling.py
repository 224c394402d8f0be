"""Klai sampling settings (top-level, `providerArgs` aliases, `generationConfig`) reach every
provider as its own fields, against the local stack: the fake upstream shows what arrived."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.fake_llm import FakeLlm
from tests.integration.test_bad_input import assert_klai_error

# Gemini has no server key in the test stack: requests bring one (not credential-shaped).
GEMINI_KEY = "request-gemini-key-" + "0" * 12
PROVIDERS = ("openai", "azure", "fakecompat", "anthropic", "gemini", "bedrock")
# Where each provider's request lands on the fake upstream.
PATHS = {
    "openai": "/v1/chat/completions",
    "azure": "/openai/deployments/fake-text/chat/completions",
    "fakecompat": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "/models/fake-text:streamGenerateContent",
    "bedrock": "/model/fake-text/converse-stream",
}


def gemini_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = body.get("generationConfig", {})
    return config


def converse_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = body.get("inferenceConfig", {})
    return config


def whole(body: dict[str, Any]) -> dict[str, Any]:
    return body


# The part of each provider's body that holds its sampling settings.
SETTINGS_OF: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "openai": whole,
    "azure": whole,
    "fakecompat": whole,
    "anthropic": whole,
    "gemini": gemini_config,
    "bedrock": converse_config,
}


def query(stack: Stack, provider: str, **payload: Any) -> httpx.Response:
    """`POST /llm/query` with `stream: false` for `provider`'s fake-text model."""
    body: dict[str, Any] = {
        "provider": provider,
        "model": "fake-text",
        "stream": False,
        "messages": [{"role": "user", "content": "Hi"}],
        **payload,
    }
    if provider == "gemini":
        body["apiKey"] = GEMINI_KEY
    return httpx.post(
        f"{stack.http}/llm/query", json={"apiKey": stack.api_key, "payload": body}, timeout=30
    )


def sent(fake_llm: FakeLlm, provider: str) -> dict[str, Any]:
    """The body the fake upstream last received for `provider`."""
    return fake_llm.last(PATHS[provider]).body


def settings_sent(fake_llm: FakeLlm, provider: str) -> dict[str, Any]:
    return SETTINGS_OF[provider](sent(fake_llm, provider))


def refused(r: httpx.Response, *fields: str) -> str:
    """A 400 whose message names every field."""
    error = assert_klai_error(r, 400, "invalid_request")
    message = str(error["message"])
    for field in fields:
        assert field in message, (field, message)
    return message


# Each provider's own names for maxTokens 77, topP 0.5, stopSequences ["END"], temperature.
ALIASED = {
    "openai": {"max_completion_tokens": 77, "top_p": 0.5, "stop": ["END"], "temperature": 0.25},
    "azure": {"max_completion_tokens": 77, "top_p": 0.5, "stop": ["END"], "temperature": 0.25},
    "fakecompat": {"max_tokens": 77, "top_p": 0.5, "stop": ["END"], "temperature": 0.25},
    "anthropic": {"max_tokens": 77, "top_p": 0.5, "stop_sequences": ["END"], "temperature": 0.25},
    "gemini": {"maxOutputTokens": 77, "topP": 0.5, "stopSequences": ["END"], "temperature": 0.25},
    "bedrock": {"maxTokens": 77, "topP": 0.5, "stopSequences": ["END"], "temperature": 0.25},
}
KLAI_ALIASES = ("maxTokens", "topP", "stopSequences")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_args_aliases_arrive_as_the_providers_own_fields(
    stack: Stack, fake_llm: FakeLlm, provider: str
) -> None:
    args = {"maxTokens": 77, "topP": 0.5, "stopSequences": ["END"], "temperature": 0.25}
    r = query(stack, provider, providerArgs=args)
    assert r.status_code == 200, r.text
    settings = settings_sent(fake_llm, provider)
    assert settings.items() >= ALIASED[provider].items()
    body = sent(fake_llm, provider)
    foreign = [alias for alias in KLAI_ALIASES if alias not in ALIASED[provider]]
    assert not [alias for alias in foreign if alias in body or alias in settings]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_top_level_settings_of_the_older_klai_docs(
    stack: Stack, fake_llm: FakeLlm, provider: str
) -> None:
    r = query(stack, provider, max_tokens=77, top_p=0.5, stop="END", temperature=0.25)
    assert r.status_code == 200, r.text
    assert settings_sent(fake_llm, provider).items() >= ALIASED[provider].items()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_max_output_tokens_and_generation_config_reach_every_provider(
    stack: Stack, fake_llm: FakeLlm, provider: str
) -> None:
    r = query(stack, provider, generationConfig={"maxOutputTokens": 77, "topP": 0.5})
    assert r.status_code == 200, r.text
    expected = {k: v for k, v in ALIASED[provider].items() if v in (77, 0.5)}
    assert settings_sent(fake_llm, provider).items() >= expected.items()


def test_top_k_where_a_provider_takes_it_and_a_clear_error_where_not(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    for provider in ("openai", "azure"):
        refused(query(stack, provider, providerArgs={"topK": 5}), "providerArgs.topK", provider)
    takes = {"fakecompat": "top_k", "anthropic": "top_k", "gemini": "topK"}
    for provider, name in takes.items():
        assert query(stack, provider, providerArgs={"topK": 5}).status_code == 200
        assert settings_sent(fake_llm, provider)[name] == 5
    assert query(stack, "bedrock", providerArgs={"topK": 5}).status_code == 200
    assert sent(fake_llm, "bedrock")["additionalModelRequestFields"] == {"top_k": 5}


def test_seed_where_a_provider_takes_it_and_a_clear_error_where_not(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    for provider in ("openai", "azure", "fakecompat", "gemini"):
        assert query(stack, provider, seed=7).status_code == 200
        assert settings_sent(fake_llm, provider)["seed"] == 7
    for provider in ("anthropic", "bedrock"):
        before = len(fake_llm.requests)
        refused(query(stack, provider, providerArgs={"seed": 7}), "providerArgs.seed", provider)
        assert len(fake_llm.requests) == before, "a refused setting reached the provider"


# A key that is no setting, and the path to it in each provider's native body.
NATIVE: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "openai": ("logprobs", True, ()),
    "azure": ("logprobs", True, ()),
    "fakecompat": ("logprobs", True, ()),
    "anthropic": ("service_tier", "auto", ()),
    "gemini": ("responseLogprobs", True, ("generationConfig",)),
    "bedrock": ("custom_flag", True, ("additionalModelRequestFields",)),
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_provider_args_pass_through_to_the_native_body(
    stack: Stack, fake_llm: FakeLlm, provider: str
) -> None:
    key, value, path = NATIVE[provider]
    r = query(stack, provider, providerArgs={key: value, "maxTokens": 20})
    assert r.status_code == 200, r.text
    place = sent(fake_llm, provider)
    for step in path:
        place = place[step]
    assert place[key] == value


@pytest.mark.parametrize("provider", PROVIDERS)
def test_conflicting_values_are_an_error_naming_both_fields(
    stack: Stack, fake_llm: FakeLlm, provider: str
) -> None:
    before = len(fake_llm.requests)
    r = query(stack, provider, max_tokens=10, providerArgs={"maxTokens": 20})
    refused(r, "payload.max_tokens", "payload.providerArgs.maxTokens")
    assert len(fake_llm.requests) == before
    agreeing = query(stack, provider, max_tokens=10, providerArgs={"maxOutputTokens": 10})
    assert agreeing.status_code == 200, agreeing.text


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"maxTokens": "many"}, "payload.providerArgs.maxTokens"),
        ({"maxTokens": 0}, "payload.providerArgs.maxTokens"),
        ({"temperature": True}, "payload.providerArgs.temperature"),
        ({"stopSequences": [1]}, "payload.providerArgs.stopSequences"),
        ({"topK": 2.5}, "payload.providerArgs.topK"),
        ({"reasoningEffort": "max"}, "payload.providerArgs.reasoningEffort"),
    ],
)
def test_wrong_types_are_an_error_naming_the_field(
    stack: Stack, args: dict[str, Any], field: str
) -> None:
    refused(query(stack, "anthropic", providerArgs=args), field)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_more_than_one_choice_is_refused_not_answered_with_one(stack: Stack, provider: str) -> None:
    refused(query(stack, provider, providerArgs={"n": 2}), "payload.providerArgs.n")


def test_gemini_only_generation_config_fields_are_refused_elsewhere(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    config = {"responseMimeType": "application/json"}
    refused(query(stack, "anthropic", generationConfig=config), "responseMimeType", "anthropic")
    assert query(stack, "gemini", generationConfig=config).status_code == 200
    assert gemini_config(sent(fake_llm, "gemini"))["responseMimeType"] == "application/json"
