"""TurnState: what one model turn has said so far, accumulated apart from any I/O.

The relay feeds it every normalised provider event; it owns the answer text, the
visible reasoning, the tool calls assembled from their fragments, the latest usage and
the finish reason, and computes the usage to report (estimated where counts are missing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import (
    Finish,
    FinishReason,
    ProviderEvent,
    RedactedThinking,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    Usage,
)
from .outcome import ToolCall
from .providers.base import LlmRequest
from .tokens import estimate_prompt_tokens, estimate_text_tokens


@dataclass
class TurnState:
    """One model turn, event by event (pure: no clock, no I/O)."""

    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    # Signed and redacted reasoning blocks, in order, as a later turn must send them back.
    reasoning_blocks: list[dict[str, Any]] = field(default_factory=list)
    # Keyed by (the provider's index, which call at that index): a compatible server that
    # streams each call whole at index 0 (or with no index) names each by a new id.
    tools: dict[tuple[int, int], ToolCall] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    finish: FinishReason | None = None
    _open_block: list[str] = field(default_factory=list)
    _latest: dict[int, int] = field(default_factory=dict)  # index -> its latest call's number

    def handle(self, event: ProviderEvent) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ThinkingDelta):
            self.thinking.append(event.text)
            self._open_block.append(event.text)
        elif isinstance(event, ThinkingSignature):
            block = "".join(self._open_block)
            self.reasoning_blocks.append(
                {"type": "thinking", "thinking": block, "signature": event.signature}
            )
            self._open_block = []
        elif isinstance(event, RedactedThinking):
            self.reasoning_blocks.append({"type": "redacted_thinking", "data": event.data})
        elif isinstance(event, ToolCallDelta):
            call, first = self._tool_call(event)
            if first:
                # A call's id is its first fragment's: the /v1 face streamed that one (or
                # the id made up for none) before a later fragment could name another.
                call.id = event.id or ""
            call.name = event.name or call.name
            call.arguments += event.arguments
            call.signature = event.signature or call.signature
        elif isinstance(event, Usage):
            # Counts are cumulative: each one present replaces what we had.
            prompt, completion = event.prompt_tokens, event.completion_tokens
            self.usage = Usage(
                prompt if prompt is not None else self.usage.prompt_tokens,
                completion if completion is not None else self.usage.completion_tokens,
                self.usage.estimated or event.estimated,
            )
        elif isinstance(event, Finish):
            self.finish = event.reason

    def _tool_call(self, event: ToolCallDelta) -> tuple[ToolCall, bool]:
        """The call `event` adds to, and whether `event` begins it: the latest at its index,
        or a new one when there is none or `event` names another id (a new call at a
        reused index)."""
        number = self._latest.get(event.index)
        if number is not None:
            call = self.tools[(event.index, number)]
            if not event.begins_another(call.id):
                return call, False
        number = 0 if number is None else number + 1
        self._latest[event.index] = number
        call = self.tools[(event.index, number)] = ToolCall(id="", name="")
        return call, True

    def answer(self) -> str:
        return "".join(self.text)

    def reasoning(self) -> str:
        return "".join(self.thinking)

    def tool_calls(self) -> list[ToolCall]:
        return [self.tools[i] for i in sorted(self.tools)]

    def reported_usage(self, request: LlmRequest) -> dict[str, Any]:
        """The usage for `end`: the provider's counts, estimated (and said so) where missing."""
        prompt, completion = self.usage.prompt_tokens, self.usage.completion_tokens
        estimated = prompt is None or completion is None or self.usage.estimated
        if prompt is None:
            prompt = estimate_prompt_tokens(request.messages, request.tools)
        if completion is None:
            produced = self.answer() + self.reasoning()
            produced += "".join(c.name + c.arguments for c in self.tools.values())
            completion = estimate_text_tokens(produced)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "estimated": estimated,
        }
