"""JSON answers (`response_format`) through a forced tool, for Anthropic and Bedrock.

Neither takes OpenAI's `response_format`; both take a tool whose input schema is the answer's
schema, forced with `tool_choice`. The model's tool input is then the JSON answer: it is
streamed back as the message text and the turn ends with `stop`, so callers see what
OpenAI would have sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..events import Finish, ProviderEvent, TextDelta, ToolCallDelta
from .sampling import Sampling, invalid

DESCRIPTION = "Give your whole answer as this tool's input: it is the JSON the user asked for."


@dataclass(frozen=True, slots=True)
class AnswerTool:
    """The forced tool carrying a JSON answer."""

    name: str
    description: str
    schema: dict[str, Any]


def answer_tool(sampling: Sampling, provider: str, has_tools: bool) -> AnswerTool | None:
    """The forced tool for a JSON `response_format`, or None when the answer is plain text.
    Refused with the request's own tools (the forced tool would keep the model from
    calling them) and for schemas whose root is not an object (tool inputs are objects)."""
    fmt = sampling.response_format
    if fmt is None or not fmt.is_json:
        return None
    where = sampling.field_of("response_format")
    if has_tools:
        raise invalid(
            where,
            f"{where} cannot be combined with tools on provider '{provider}' "
            "(the JSON answer is a forced tool call there)",
        )
    schema = fmt.schema or {"type": "object"}
    if schema.get("type") != "object":
        raise invalid(
            where,
            f"{where}: provider '{provider}' needs a schema whose root type is object",
        )
    return AnswerTool(fmt.name, DESCRIPTION, schema)


def as_answer(events: Iterable[ProviderEvent], sampling: Sampling) -> Iterator[ProviderEvent]:
    """With a JSON `response_format`, the forced tool's input as text and `tool_calls` as
    `stop`; otherwise the events unchanged."""
    fmt = sampling.response_format
    if fmt is None or not fmt.is_json:
        yield from events
        return
    for event in events:
        if isinstance(event, ToolCallDelta):
            if event.arguments:
                yield TextDelta(event.arguments)
        elif isinstance(event, Finish) and event.reason == "tool_calls":
            yield Finish("stop")
        else:
            yield event
