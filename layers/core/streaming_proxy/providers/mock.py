"""The built-in mock provider: echoes the user, or streams scripted text, tools and failures."""

from __future__ import annotations

import asyncio
import bisect
import json
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UpstreamError, ValidationFailed, describe, field_problems
from ..events import Finish, FinishReason, ProviderEvent, TextDelta, ThinkingDelta, ToolCallDelta
from ..events import Usage as UsageEvent
from ..tokens import estimate_prompt_tokens, estimate_text_tokens
from .base import LlmRequest
from .mock_script import MockRound, MockToolCall, current_round, fill
from .translate import text_of

DEFAULT_MODEL = "mock-echo"

# A word with the whitespace around it, so that the pieces join back to the exact text.
_WORD = re.compile(r"\s*\S+\s*|\s+")


class MockArgs(BaseModel):
    """`payload.providerArgs` for the mock; unknown keys (temperature, ...) are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    text: str | None = None
    chunks: int | None = Field(default=None, ge=1, le=100_000)
    delay_ms: int = Field(default=15, ge=0, le=10_000, alias="delayMs")
    fail_after: int | None = Field(default=None, ge=0, alias="failAfter")
    fail_before_first_byte: bool = Field(default=False, alias="failBeforeFirstByte")
    fail_status: int | None = Field(default=None, ge=400, le=599, alias="failStatus")
    # `lambda: []`, not `list`: cheaper at import (docs/architecture.md decision 31).
    tool_calls: list[MockToolCall] = Field(default_factory=lambda: [], alias="toolCalls")
    thinking: str | None = None
    finish_reason: FinishReason | None = Field(default=None, alias="finishReason")
    usage: bool = True
    script: list[MockRound] | None = Field(default=None, min_length=1)


@dataclass(frozen=True, slots=True)
class MockTurn:
    """What the mock says in this request: from the args, or from the script's round."""

    thinking: str
    text: str
    tool_calls: list[MockToolCall]


def mock_turn(args: MockArgs, messages: list[dict[str, Any]]) -> MockTurn:
    if args.script is None:
        text = last_user_text(messages) if args.text is None else args.text
        return MockTurn(args.thinking or "", text, args.tool_calls)
    round_ = current_round(args.script, messages)
    if round_.text is not None:
        text = fill(round_.text, messages)
    else:
        text = "" if round_.tool_calls else last_user_text(messages)
    return MockTurn(round_.thinking or "", text, round_.tool_calls)


class MockProvider:
    """No network: everything it streams comes from the request."""

    name = "mock"

    def prepare(self, request: LlmRequest) -> None:
        """Reject bad providerArgs or message content with a 400 before anything is published."""
        mock_args(request)
        last_user_text(request.messages)

    async def stream(self, request: LlmRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Thinking, then text, then tool calls, then usage and finish, each after a delay."""
        args = mock_args(request)
        if args.fail_before_first_byte:
            raise UpstreamError(
                "mock failure before first byte", upstream_status=args.fail_status or 503
            )
        delay = args.delay_ms / 1000
        turn = mock_turn(args, request.messages)
        for piece in split_words(turn.thinking):
            await asyncio.sleep(delay)
            yield ThinkingDelta(piece)
        text = turn.text
        pieces = split_words(text) if args.chunks is None else split_even(text, args.chunks)
        for sent, piece in enumerate(pieces):
            await asyncio.sleep(delay)
            if sent == args.fail_after:
                raise _injected_failure(sent, args)
            yield TextDelta(piece)
        if args.fail_after is not None:
            raise _injected_failure(len(pieces), args)
        arguments = [_arguments_json(call) for call in turn.tool_calls]
        for index, call in enumerate(turn.tool_calls):
            await asyncio.sleep(delay)
            yield ToolCallDelta(index, id=call.id or f"call_mock_{index}", name=call.name)
            for fragment in split_even(arguments[index], 3):
                await asyncio.sleep(delay)
                yield ToolCallDelta(index, arguments=fragment)
        if args.usage:
            completion = sum(map(estimate_text_tokens, [turn.thinking, text, *arguments]))
            prompt = estimate_prompt_tokens(request.messages, request.tools)
            yield UsageEvent(prompt_tokens=prompt, completion_tokens=completion)
        yield Finish(args.finish_reason or ("tool_calls" if turn.tool_calls else "stop"))


def mock_args(request: LlmRequest) -> MockArgs:
    """The validated providerArgs, or ValidationFailed naming each bad field."""
    try:
        return MockArgs.model_validate(request.provider_args)
    except ValidationError as e:
        problems = field_problems(e)
        raise ValidationFailed(
            f"invalid providerArgs for provider 'mock': {describe(problems)}", fields=problems
        ) from e


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message ("" when there is none). The mock echoes text
    only: other parts (images, audio, files) are read past, not refused."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return text_of(content)
    return ""


def split_words(text: str) -> list[str]:
    """Word-sized pieces of `text` that concatenate back to exactly `text`."""
    return _WORD.findall(text)


def split_even(text: str, count: int) -> list[str]:
    """`count` pieces of similar length (fewer only for very short text), cut between words
    when there are enough words; they concatenate back to exactly `text`."""
    words = split_words(text)
    if len(words) >= count:
        ends = list(accumulate(map(len, words)))[:-1]
        cuts: list[int] = []
        at = -1
        for k in range(1, count):
            # Leave one word end for each later cut.
            at = _nearest(ends, k * len(text) / count, at + 1, len(ends) - (count - k))
            cuts.append(ends[at])
    else:
        size, extra = divmod(len(text), count)
        cuts = [k * size + min(k, extra) for k in range(1, count)]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in pairwise(bounds) if b > a]


def _nearest(values: list[int], target: float, low: int, high: int) -> int:
    """The index in values[low..high] (sorted) of the value closest to target."""
    at = bisect.bisect_left(values, target, low, high + 1)
    if at > high or (at > low and target - values[at - 1] <= values[at] - target):
        return at - 1
    return at


def _arguments_json(call: MockToolCall) -> str:
    if isinstance(call.arguments, str):
        return call.arguments
    return json.dumps(call.arguments, ensure_ascii=False)


def _injected_failure(sent: int, args: MockArgs) -> UpstreamError:
    return UpstreamError(
        f"mock failure after {sent} chunks", upstream_status=args.fail_status or 500
    )
