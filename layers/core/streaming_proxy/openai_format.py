"""The OpenAI Chat Completions wire format: request parsing and chunk/completion building."""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .channels.names import ChannelName
from .contract import ActionName, Message, Payload, Tool, ToolChoice
from .envelopes import encode
from .errors import ProxyError, ValidationFailed, invalid_request
from .events import ProviderEvent, TextDelta, ThinkingDelta, ToolCallDelta
from .outcome import StreamOutcome, missing_call_id
from .providers.sampling import ALIASES, invalid
from .redact import scrub

# Every name a sampling setting goes by (OpenAI's among them).
ALIASES_BY_NAME = frozenset(alias for aliases in ALIASES.values() for alias in aliases)

# A JSON string as `json.dumps(text, ensure_ascii=False)` writes it, without building an
# encoder per call (dumps does whenever it is given an option).
_json_string = json.JSONEncoder(ensure_ascii=False).encode

# OpenAI's finish_reason values; ours map onto them.
_FINISH = {"cancelled": "stop", "error": "stop"}


# The /v1 face loads on its first request (api/app.py): its request models are built then.
class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """An OpenAI Chat Completions body plus this proxy's fan-out extras."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    # `provider/model`: the model's part is held to MAX_MODEL_CHARS as a Klai payload's
    # model is (`payload_of`), the whole to what a provider's name could add.
    model: str = Field(min_length=1, max_length=1024)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice = None
    # `lambda: []`, not `list`: cheaper at import (docs/architecture.md decision 31).
    channels: list[ChannelName] = Field(default_factory=lambda: [])
    action_name: ActionName = Field(default=None, alias="actionName")
    provider_args: dict[str, Any] = Field(default_factory=dict, alias="providerArgs")
    # The app key may come in the body, as on the Klai routes; it never reaches a provider.
    api_key: SecretStr | None = Field(default=None, alias="apiKey")

    def settings(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The other fields: (sampling settings, typed later by `normalise`; the rest)."""
        extra = self.model_extra or {}
        settings = {k: v for k, v in extra.items() if k in ALIASES_BY_NAME}
        return settings, {k: v for k, v in extra.items() if k not in settings}


def split_model(model: str, known: list[str], default_provider: str) -> tuple[str, str]:
    """`anthropic/claude-x` -> (anthropic, claude-x); a model without a known prefix goes to
    the default provider whole (OpenRouter-style names keep their slashes)."""
    prefix, sep, rest = model.partition("/")
    if sep and prefix in known:
        if not rest:
            raise ValidationFailed(f"model '{model}' names a provider but no model")
        return prefix, rest
    return default_provider, model


def payload_of(body: ChatCompletionRequest, provider: str, model: str, native: bool) -> Payload:
    """The Klai payload for a Chat Completions body. Its settings stay top-level fields
    (read by `normalise` like a Klai payload's); any other field reaches a provider that
    takes Chat Completions bodies (`native`) as it is, and is a 400 naming it for others."""
    settings, others = body.settings()
    if others and not native:
        param = sorted(others)[0]
        raise invalid(
            param, f"{param} is not supported by provider '{provider}' on /v1/chat/completions"
        )
    data: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "messages": body.messages,
        "stream": body.stream,
        "tools": body.tools,
        "toolChoice": body.tool_choice,
        "providerArgs": {**others, **body.provider_args},
        **settings,
    }
    try:
        return Payload.model_validate(data)
    except ValidationError as e:  # what the payload bounds and the body does not (`model`)
        raise invalid_request(e) from e


class ChunkBuilder:
    """Builds `chat.completion.chunk` frames for one stream."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())
        self._role_sent = False
        # The provider's call index -> (its latest call's provider id, that call's index
        # here): calls are numbered 0, 1, 2... in order, as the SDK's accumulator needs.
        self._calls: dict[int, tuple[str | None, int]] = {}
        self._call_count = 0
        # The frame of a text or reasoning delta around its JSON string, for `text_frame`.
        self._around: dict[str, tuple[bytes, bytes]] = {}

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        return self._frame([_choice(delta, finish)])

    def for_event(self, event: ProviderEvent) -> dict[str, Any] | None:
        if isinstance(event, TextDelta) and event.text:
            return self.chunk({"content": event.text})
        if isinstance(event, ThinkingDelta) and event.text:
            return self.chunk({"reasoning_content": event.text})
        if isinstance(event, ToolCallDelta):
            return self.chunk({"tool_calls": [self._tool_call(event)]})
        return None

    def _tool_call(self, event: ToolCallDelta) -> dict[str, Any]:
        """The delta's call as the SDK reassembles it. A fragment with another id than the
        call at its index is a new call (a compatible server streaming each call whole at
        index 0), as `TurnState` counts them; the provider's indices may have gaps, the
        SDK's may not (its accumulator fails on one)."""
        latest = self._calls.get(event.index)
        if latest is not None and not event.begins_another(latest[0]):
            # A later fragment's id is not the call's: its first fragment's (streamed) is.
            return {"index": latest[1], "function": {"arguments": event.arguments}}
        number, self._call_count = self._call_count, self._call_count + 1
        self._calls[event.index] = (event.id, number)
        return {
            "index": number,
            "id": event.id or missing_call_id(self.id, number),
            "type": "function",
            "function": {"name": event.name or "", "arguments": event.arguments},
        }

    def frame_for(self, event: ProviderEvent) -> bytes | None:
        """`sse_frame(for_event(event))`, the same bytes; a text or reasoning delta (nearly
        every event) costs one string encoding instead of a whole frame's."""
        if self._role_sent and isinstance(event, TextDelta | ThinkingDelta) and event.text:
            key = "content" if isinstance(event, TextDelta) else "reasoning_content"
            before, after = self._around.get(key) or self._template(key)
            text = _json_string(event.text)
            return before + text.encode("utf-8", errors="replace") + after
        chunk = self.for_event(event)
        return None if chunk is None else sse_frame(chunk)

    def _template(self, key: str) -> tuple[bytes, bytes]:
        # The delta is the frame's last string: what follows it holds no caller's text.
        frame = sse_frame(self._frame([_choice({key: "\x00"}, None)]))
        before, _, after = frame.rpartition(b'"\\u0000"')
        self._around[key] = before, after
        return before, after

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


def _choice(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def finish_reason(outcome: StreamOutcome) -> str:
    return _FINISH.get(outcome.finish_reason, outcome.finish_reason)


def completion(completion_id: str, model: str, outcome: StreamOutcome) -> dict[str, Any]:
    """A whole `chat.completion` object (for `stream: false`)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": outcome.text if outcome.text or not outcome.tool_calls else None,
    }
    if outcome.tool_calls:
        # Never without an id: the relay gave one to a call the provider named none for.
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
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_status(error: ProxyError) -> int:
    """The HTTP status OpenAI would answer: OpenAI never answers 422, so a provider's 422
    passed on (a compatible server's validation error) is a 400 here."""
    return 400 if error.status == 422 else error.status


def error_body(error: ProxyError) -> dict[str, Any]:
    """OpenAI's error shape, so the official SDK raises its typed exceptions: `code` is our
    stable kind (OpenAI's codes are strings), `param` the first invalid field."""
    return {
        "error": {
            "message": scrub(error.message),
            "type": _ERROR_TYPES.get(openai_status(error), "api_error"),
            "param": scrub(error.fields[0]["field"]) if error.fields else None,
            "code": error.kind,
        }
    }


def sse_frame(data: dict[str, Any] | str) -> bytes:
    return b"data: " + (data.encode() if isinstance(data, str) else encode(data)) + b"\n\n"
