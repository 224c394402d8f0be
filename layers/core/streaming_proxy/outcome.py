"""What a relay produces and where it goes: sinks, observers, the outcome and its shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ProxyError
from .events import FinishReason, ProviderEvent
from .textcheck import model_json


class Sink(Protocol):
    """Where envelopes go: the SSE answer, the channel publisher, a recorder in tests."""

    async def start(self) -> None: ...

    async def send(self, envelope: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


class Observer(Protocol):
    """Sees every normalised provider event as it arrives, then the outcome (OpenAI face)."""

    async def on_event(self, event: ProviderEvent) -> None: ...

    async def on_finish(self, outcome: StreamOutcome) -> None: ...


@dataclass
class ToolCall:
    """One tool call, assembled from its streamed fragments (`signature`: Gemini's
    `thoughtSignature`, to send back with the call)."""

    id: str
    name: str
    arguments: str = ""
    signature: str | None = None

    def as_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def missing_call_id(stream_id: str, number: int) -> str:
    """The id of call `number` when the provider gave it none (some compatible servers do),
    never empty: the backend or SDK caller sends it back with the call's result. From the
    stream's id or its completion's (`chatcmpl-` + the same characters), the same in a
    stream's chunks, its `function_call` and `end`, and a whole completion."""
    return f"call_{stream_id[-8:]}_{number}"


def unknown_usage() -> dict[str, Any]:
    """`end.usage` when the counts could not be worked out at all."""
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "estimated": True}


@dataclass
class StreamOutcome:
    """The whole result of a stream: what `stream:false` answers and `end` reports."""

    text: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    usage: dict[str, Any] = field(default_factory=dict)
    error: ProxyError | None = None
    started: bool = False


def function_entry(name: str, arguments: dict[str, Any] | str, call_id: str) -> dict[str, Any]:
    """One entry of `function_call.functions`: the call, its parsed arguments, and the
    `userMessage` argument a page can show while it runs (Klai), or null."""
    parsed: Any = arguments
    if isinstance(arguments, str):
        try:
            parsed = model_json(arguments or "{}")
        except ValueError:
            parsed = arguments
    message = parsed.get("userMessage") if isinstance(parsed, dict) else None
    return {
        "name": name,
        "userMessage": message if isinstance(message, str) else None,
        "arguments": parsed,
        "toolCallId": call_id,
    }
