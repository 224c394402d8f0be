"""/v1 through the official `openai` SDK against hostile requests:
choice counts in every spelling, response_format passthrough."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import Stack
from tests.fake_llm import FakeLlm

USER = [{"role": "user", "content": "Say hi"}]


def client(stack: Stack, retries: int = 0) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=f"{stack.http}/v1", api_key=stack.api_key, max_retries=retries, timeout=30
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"n": 2},
        {"providerArgs": {"n": 2}},
        {"providerArgs": {"candidate_count": 2}},
        {"candidateCount": 3},
    ],
)
@pytest.mark.parametrize("model", ["openai/fake-text", "fakecompat/fake-text"])
async def test_more_than_one_choice_is_refused_in_every_spelling(
    stack: Stack, fake_llm: FakeLlm, model: str, extra: dict[str, Any]
) -> None:
    # The adapter streams choice 0 only: a caller asking for two must hear so, not get one.
    with pytest.raises(openai.BadRequestError) as refused:
        await client(stack).chat.completions.create(
            model=model, messages=USER, stream=True, extra_body=extra
        )
    assert refused.value.status_code == 400
    assert refused.value.param is not None and refused.value.param.split(".")[-1] in {
        "n",
        "candidate_count",
        "candidateCount",
    }


async def test_a_json_schema_response_format_reaches_an_openai_upstream_as_sent(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "place", "strict": True, "schema": schema},
    }
    stream = await client(stack).chat.completions.create(
        model="openai/fake-text",
        messages=USER,
        stream=True,
        response_format=fmt,  # type: ignore[arg-type]
    )
    async for _ in stream:
        pass
    assert fake_llm.last("/chat/completions").body["response_format"] == fmt
