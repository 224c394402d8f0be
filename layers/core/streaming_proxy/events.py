"""The normalised event model every provider adapter yields, whatever its wire format,
plus the events the tool loop adds between rounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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
class ThinkingSignature:
    """Closes the current reasoning block with the provider's signature (Anthropic's
    `signature_delta`, Bedrock's `reasoningContent.signature`). A later turn must send the
    block back with it, or extended thinking stops working across tool rounds."""

    signature: str


@dataclass(frozen=True, slots=True)
class RedactedThinking:
    """A reasoning block the provider encrypted (`redacted_thinking`): opaque, sent back as is."""

    data: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of tool call number `index`: id and name on the first fragment, then args.

    `signature` is Gemini's `thoughtSignature` of the call, which must come back with the
    call in the next request."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    signature: str | None = None

    def begins_another(self, current_id: str | None) -> bool:
        """Whether this fragment begins another call at its index than the one there so far
        (whose id is `current_id`): it names another id. A compatible server may stream
        each call whole at index 0. One rule for every reader of the fragments (the turn,
        the `/v1` chunks, the call guards), so they count the same calls."""
        return bool(self.id and current_id and self.id != current_id)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts so far. Cumulative: a later Usage replaces an earlier one. `estimated`
    when a count in it was estimated (the tool loop's sums over rounds can be)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Finish:
    """The provider's end signal, with its reason mapped to ours."""

    reason: FinishReason


ProviderEvent = (
    TextDelta
    | ThinkingDelta
    | ThinkingSignature
    | RedactedThinking
    | ToolCallDelta
    | Usage
    | Finish
)


# -- the tool loop's events (tools/loop.py) ---------------------------------------------------

# Tools whose names start with this are frontend tools: a browser on the stream's channels
# runs them (the page sees the name without it); the others run on the app's webhook.
FRONTEND_PREFIX = "ui_"


def is_frontend(name: str) -> bool:
    """Whether a browser runs the tool `name` (`ui_show_map`), not the app's webhook."""
    return name.startswith(FRONTEND_PREFIX)


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One tool call the model asked for, as the proxy runs it.

    `id` is the proxy's own (unguessable, unique across streams: what browsers and the
    webhook see and answer); `model_id` is the provider's, used in the conversation."""

    id: str
    model_id: str
    name: str
    arguments: dict[str, Any] | str
    frontend: bool
    # A frontend call whose `llmToolCall` would not fit one WebSocket message: no page is
    # told of it and it fails at once (tools/messages.py; decided once, when planned).
    too_large: bool = False

    @property
    def tool_name(self) -> str:
        """The name a page handles: `ui_show_map` -> `show_map`."""
        return self.name.removeprefix(FRONTEND_PREFIX) if self.frontend else self.name

    def user_message(self) -> str | None:
        value = self.arguments.get("userMessage") if isinstance(self.arguments, dict) else None
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class ToolCallsReady:
    """The model asked for tools (its turn is complete). `run`: the proxy runs them now and
    continues the conversation; otherwise the stream ends here with `finish_reason:
    tool_calls` and the calls for the backend to run."""

    calls: tuple[PlannedCall, ...]
    run: bool


@dataclass(frozen=True, slots=True)
class ToolsWaiting:
    """The loop waits for tool results (True) or got them all (False): the idle limit,
    which measures the provider's silence, does not run while tools run."""

    waiting: bool


@dataclass(frozen=True, slots=True)
class RoundStarted:
    """The loop calls the provider again with the tool results (round 2, 3, ...)."""

    number: int


LoopEvent = ToolCallsReady | ToolsWaiting | RoundStarted
StreamEvent = ProviderEvent | LoopEvent
