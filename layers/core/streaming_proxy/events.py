"""The normalised event model every provider adapter yields, whatever its wire format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the assistant's answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """A piece of the model's visible reasoning; never mixed into the answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of tool call number `index`: id and name on the first fragment, then args."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts so far. Cumulative: a later Usage replaces an earlier one."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """The provider's end signal, with its reason mapped to ours."""

    reason: FinishReason


ProviderEvent = TextDelta | ThinkingDelta | ToolCallDelta | Usage | Finish
