"""What every provider adapter is: `prepare` checks a request early, `stream` yields events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from ..errors import ProviderNotConfigured, UpstreamError
from ..events import ProviderEvent


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """The provider-neutral request: OpenAI-style messages and tools plus per-provider overrides."""

    model: str | None
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    provider_args: dict[str, Any] = field(default_factory=dict)
    generation_config: dict[str, Any] | None = None
    api_key: SecretStr | None = None


class Provider(Protocol):
    """A provider adapter.

    `prepare` runs before anything is published: it raises `ValidationFailed` or
    `ProviderNotConfigured` for requests that cannot succeed. `stream` yields
    normalised events, raises `UpstreamError` for HTTP errors and in-stream error
    payloads, and closes the upstream response when the consumer stops iterating.
    """

    name: str

    def prepare(self, request: LlmRequest) -> None: ...

    def stream(self, request: LlmRequest) -> AsyncIterator[ProviderEvent]: ...


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
    body = (await response.aread())[:8192]
    raise UpstreamError(
        f"{provider} returned HTTP {response.status_code}: {upstream_message(body)}",
        upstream_status=response.status_code,
    )


def upstream_message(body: bytes) -> str:
    """The human message of a provider error body (OpenAI, Anthropic and Gemini shapes)."""
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace").strip()[:500] or "no error message"
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return json.dumps(data)[:500]
