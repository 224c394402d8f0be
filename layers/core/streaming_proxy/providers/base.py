"""What every provider adapter is: `prepare` checks a request early, `stream` yields events."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from ..errors import ProviderNotConfigured, UpstreamError
from ..events import ProviderEvent, StreamEvent
from .sampling import Sampling

# Enough for any provider's JSON error; the rest of a long (HTML) page is never read.
MAX_ERROR_BODY_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """The provider-neutral request: OpenAI-style messages and tools, the typed sampling
    settings, and the caller's native pass-through fields (`provider_args`, Gemini's
    `generation_config`) with every setting already taken out of them."""

    model: str | None
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    provider_args: dict[str, Any] = field(default_factory=dict)
    generation_config: dict[str, Any] | None = None
    api_key: SecretStr | None = None
    sampling: Sampling = field(default_factory=Sampling)


class Provider(Protocol):
    """A provider adapter.

    `prepare` runs before anything is published: it raises `ValidationFailed` or
    `ProviderNotConfigured` for requests that cannot succeed. `stream` yields
    normalised events, raises `UpstreamError` for HTTP errors and in-stream error
    payloads, and is an async generator, so a consumer that stops early closes it
    (`aclose`, e.g. `contextlib.aclosing`) and with it the upstream response.
    """

    name: str

    def prepare(self, request: LlmRequest) -> None: ...

    def stream(self, request: LlmRequest) -> AsyncGenerator[ProviderEvent, None]: ...


class EventSource(Protocol):
    """What a relay consumes: a provider adapter, or the tool loop wrapping one."""

    name: str

    def stream(self, request: LlmRequest) -> AsyncIterator[StreamEvent]: ...


def pick_key(request: LlmRequest, server_key: SecretStr | None, provider: str) -> str:
    """The request's own key wins; else the server-held key; else a clear 401."""
    for candidate in (request.api_key, server_key):
        if candidate is not None and candidate.get_secret_value():
            return candidate.get_secret_value()
    raise ProviderNotConfigured(
        f"no API key for provider '{provider}': set payload.apiKey or configure one on the server"
    )


async def raise_for_upstream(response: httpx.Response, provider: str) -> None:
    """Turn a non-2xx provider answer into UpstreamError carrying the provider's own message."""
    if response.is_success:
        return
    body = (await response.aread())[:MAX_ERROR_BODY_BYTES]
    raise UpstreamError(
        f"{provider} returned HTTP {response.status_code}: {upstream_message(body)}",
        upstream_status=response.status_code,
    )


def upstream_message(body: bytes) -> str:
    """What a provider's error body says, from the fields of the formats we know.

    OpenAI, Azure and compatible servers, Anthropic and Gemini put `message` (plus `type`,
    `code` or `status`) under `error`; Bedrock and some gateways put them at the top. Only
    those fields are read: never the raw body, which may be an HTML page or echo the
    request with its keys (UpstreamError scrubs and bounds what is kept).
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return "the provider's error body was not JSON"
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return "the provider's error body had no message"
    error = data.get("error", data)
    if isinstance(error, str):
        return error
    if not isinstance(error, dict):
        return "the provider's error body had no message"
    message = next(
        (error[k] for k in ("message", "Message", "detail") if isinstance(error.get(k), str)),
        None,
    )
    kinds = [
        str(error[k])
        for k in ("type", "status", "code", "__type")
        if isinstance(error.get(k), str | int) and not isinstance(error.get(k), bool)
    ]
    if message is None and not kinds:
        return "the provider's error body had no message"
    suffix = f" ({', '.join(dict.fromkeys(kinds))})" if kinds else ""
    return f"{message or 'error'}{suffix}"
