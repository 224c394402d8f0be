"""The OpenAI Chat Completions wire format: request parsing and chunk/completion building."""

from __future__ import annotations

import time
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from .channels.names import ChannelName
from .contract import ActionName, Message, Payload, Tool, ToolChoice
from .envelopes import encode
from .errors import ProxyError, ValidationFailed
from .events import ProviderEvent, TextDelta, ThinkingDelta, ToolCallDelta
from .outcome import StreamOutcome
from .redact import scrub

# Chat Completions fields that are sampling settings: passed to the provider as providerArgs.
SAMPLING_FIELDS = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "n", "response_format",
    "parallel_tool_calls", "reasoning_effort", "user",
)  # fmt: skip

# OpenAI's finish_reason values; ours map onto them.
_FINISH = {"cancelled": "stop", "error": "stop"}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """An OpenAI Chat Completions body plus this proxy's fan-out extras."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice = None
    channels: list[ChannelName] = Field(default_factory=list)
    action_name: ActionName = Field(default=None, alias="actionName")
    provider_args: dict[str, Any] = Field(default_factory=dict, alias="providerArgs")
    # Sampling settings: typed here, so a wrong type is a 422 naming the field, not a
    # provider's 400.
    temperature: StrictFloat | None = None
    top_p: StrictFloat | None = None
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    presence_penalty: StrictFloat | None = None
    frequency_penalty: StrictFloat | None = None
    logit_bias: dict[str, StrictFloat] | None = None
    n: StrictInt | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    reasoning_effort: StrictStr | None = None
    user: StrictStr | None = None

    def sampling(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SAMPLING_FIELDS if getattr(self, k) is not None}


def split_model(model: str, known: list[str], default_provider: str) -> tuple[str, str]:
    """`anthropic/claude-x` -> (anthropic, claude-x); a model without a known prefix goes to
    the default provider whole (OpenRouter-style names keep their slashes)."""
    prefix, sep, rest = model.partition("/")
    if sep and prefix in known:
        if not rest:
            raise ValidationFailed(f"model '{model}' names a provider but no model")
        return prefix, rest
    return default_provider, model


def payload_of(body: ChatCompletionRequest, provider: str, model: str, api_key: Any) -> Payload:
    return Payload(
        provider=provider,
        model=model,
        messages=body.messages,
        stream=body.stream,
        tools=body.tools,
        toolChoice=body.tool_choice,
        providerArgs={**body.sampling(), **body.provider_args},
        apiKey=api_key,
    )


class ChunkBuilder:
    """Builds `chat.completion.chunk` frames for one stream."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())
        self._role_sent = False
        self._tool_ids: dict[int, str] = {}

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        return self._frame(
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )

    def for_event(self, event: ProviderEvent) -> dict[str, Any] | None:
        if isinstance(event, TextDelta) and event.text:
            return self.chunk({"content": event.text})
        if isinstance(event, ThinkingDelta) and event.text:
            return self.chunk({"reasoning_content": event.text})
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index}
            if event.index not in self._tool_ids:
                self._tool_ids[event.index] = event.id or f"call_{self.id[-8:]}_{event.index}"
                call["id"] = self._tool_ids[event.index]
                call["type"] = "function"
                call["function"] = {"name": event.name or "", "arguments": event.arguments}
            else:
                call["function"] = {"arguments": event.arguments}
            return self.chunk({"tool_calls": [call]})
        return None

    def finish(self, outcome: StreamOutcome) -> dict[str, Any]:
        return self.chunk({}, finish_reason(outcome))

    def usage(self, outcome: StreamOutcome) -> dict[str, Any]:
        return {**self._frame([]), "usage": outcome.usage}

    def _frame(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }


def finish_reason(outcome: StreamOutcome) -> str:
    return _FINISH.get(outcome.finish_reason, outcome.finish_reason)


def completion(completion_id: str, model: str, outcome: StreamOutcome) -> dict[str, Any]:
    """A whole `chat.completion` object (for `stream: false`)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": outcome.text if outcome.text or not outcome.tool_calls else None,
    }
    if outcome.tool_calls:
        message["tool_calls"] = [call.as_openai() for call in outcome.tool_calls]
    if outcome.thinking:
        message["reasoning_content"] = outcome.thinking
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(outcome),
            }
        ],
        "usage": outcome.usage,
    }


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(error: ProxyError) -> dict[str, Any]:
    """OpenAI's error shape, so the official SDK raises its typed exceptions: `code` is our
    stable kind (OpenAI's codes are strings), `param` the first invalid field."""
    return {
        "error": {
            "message": scrub(error.message),
            "type": _ERROR_TYPES.get(error.status, "api_error"),
            "param": scrub(error.fields[0]["field"]) if error.fields else None,
            "code": error.kind,
        }
    }


def sse_frame(data: dict[str, Any] | str) -> bytes:
    return b"data: " + (data.encode() if isinstance(data, str) else encode(data)) + b"\n\n"
