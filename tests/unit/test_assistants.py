"""The merge of a stored assistant into a run's payload, field by field (assistants.apply)."""

from __future__ import annotations

from typing import Any

from streaming_proxy.assistants import apply
from streaming_proxy.contract import AssistantBody, Payload

STORED = AssistantBody.model_validate(
    {
        "name": "Support",
        "instructions": "Be brief.",
        "provider": "anthropic",
        "model": "claude-x",
        "tools": [{"name": "lookup", "description": "Find an order"}],
        "providerArgs": {"temperature": 0.2, "maxTokens": 100},
    }
)
ASK = [{"role": "user", "content": "Hi"}]


def payload(**fields: Any) -> Payload:
    return Payload.model_validate({"messages": ASK, "assistant_id": "asst_abcdefgh1234", **fields})


def test_a_payload_without_the_fields_takes_every_stored_one() -> None:
    merged = apply(payload(), STORED)
    assert (merged.provider, merged.model, merged.instructions) == (
        "anthropic",
        "claude-x",
        "Be brief.",
    )
    assert merged.provider_args == {"temperature": 0.2, "maxTokens": 100}
    assert merged.tools is not None and merged.tools[0].function["name"] == "lookup"
    assert [m.content for m in merged.messages] == ["Hi"]


def test_each_field_the_payload_sends_wins_whole() -> None:
    merged = apply(payload(providerArgs={"topP": 0.5}, tools=[], model=None), STORED)
    assert merged.provider_args == {"topP": 0.5}  # not merged key by key
    assert merged.tools == [] and merged.model is None  # sent, even empty or null
    assert merged.provider == "anthropic" and merged.instructions == "Be brief."


def test_an_explicit_provider_wins_over_the_stored_one_even_when_it_is_the_default() -> None:
    assert apply(payload(provider="openai"), STORED).provider == "openai"
    assert apply(payload(), AssistantBody(name="bare")).provider == "openai"  # the default
