"""Sampling settings: read once from every spelling, rendered per provider (pure functions)."""

from __future__ import annotations

import pytest

from streaming_proxy.errors import ValidationFailed
from streaming_proxy.events import Finish, TextDelta, ToolCallDelta, Usage
from streaming_proxy.jobs import StreamJob
from streaming_proxy.openai_format import ChatCompletionRequest, payload_of
from streaming_proxy.providers.gemini_request import gemini_body
from streaming_proxy.providers.sampling import ResponseFormat, Sampling, Source, normalise
from streaming_proxy.providers.structured import as_answer


def read(**args: object) -> Sampling:
    sampling, _ = normalise(Source("payload.providerArgs.", args), args_prefix="x.")
    return sampling


def test_every_alias_becomes_one_typed_setting() -> None:
    sampling, (rest,) = normalise(
        Source("p.", {"maxOutputTokens": 9, "topK": 3, "stop": "END", "custom": 1}),
        args_prefix="p.",
    )
    assert (sampling.max_tokens, sampling.top_k, sampling.stop) == (9, 3, ("END",))
    assert rest == {"custom": 1}
    assert sampling.field_of("max_tokens") == "p.maxOutputTokens"
    assert read(temperature=1).temperature == 1.0


def test_the_same_setting_twice_must_agree() -> None:
    sources = (Source("a.", {"max_tokens": 5}), Source("b.", {"maxTokens": 6}))
    with pytest.raises(ValidationFailed, match=r"a\.max_tokens and b\.maxTokens"):
        normalise(*sources, args_prefix="b.")
    agreeing, _ = normalise(Source("a.", {"seed": 1}), Source("b.", {"seed": 1}), args_prefix="")
    assert agreeing.seed == 1


@pytest.mark.parametrize(
    "args",
    [
        {"maxTokens": True},
        {"temperature": "0.5"},
        {"stop": ["a", 2]},
        {"logitBias": {"1": "x"}},
        {"responseFormat": {"type": "json_schema"}},
        {"responseFormat": {"type": "xml"}},
        {"user": ""},
        {"parallelToolCalls": "no"},
    ],
)
def test_wrong_types_name_the_field(args: dict[str, object]) -> None:
    with pytest.raises(ValidationFailed) as raised:
        read(**args)
    [name] = args
    assert raised.value.fields[0]["field"].startswith(f"payload.providerArgs.{name}")


def test_a_forced_json_answer_becomes_text_and_stop() -> None:
    sampling = Sampling(response_format=ResponseFormat("json_object"))
    events = [ToolCallDelta(0, id="t", name="json_response"), ToolCallDelta(0, arguments='{"a"')]
    events += [ToolCallDelta(0, arguments=": 1}"), Usage(1, 2), Finish("tool_calls")]
    assert list(as_answer(events, sampling)) == [
        TextDelta('{"a"'),
        TextDelta(": 1}"),
        Usage(1, 2),
        Finish("stop"),
    ]
    assert list(as_answer(events, Sampling())) == events


def test_the_openai_face_reaches_gemini_in_gemini_terms() -> None:
    """The stack's Gemini has no server key, so the OpenAI face's path to it is checked here."""
    body = ChatCompletionRequest.model_validate(
        {
            "model": "gemini/gemini-2.5-flash",
            "messages": [{"role": "user", "content": "Hi"}],
            "stop": ["END"],
            "max_completion_tokens": 99,
            "reasoning_effort": "medium",
            "response_format": {"type": "json_object"},
            "user": "u-1",
        }
    )
    job = StreamJob(
        stream_id="st_x",
        app_id="a",
        kind="openai",
        action_name="",
        payload=payload_of(body, "gemini", "gemini-2.5-flash", native=False),
        flush_interval_ms=0,
    )
    assert gemini_body(job.llm_request)["generationConfig"] == {
        "maxOutputTokens": 99,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "thinkingConfig": {"thinkingBudget": 8192},
    }


def test_the_openai_face_refuses_other_fields_for_non_chat_completions_providers() -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True}
    )
    with pytest.raises(ValidationFailed) as raised:
        payload_of(body, "gemini", "m", native=False)
    assert raised.value.fields[0]["field"] == "logprobs"
    assert payload_of(body, "openai", "m", native=True).provider_args == {"logprobs": True}
