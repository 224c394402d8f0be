"""ProviderRegistry: a provider name from a request -> a configured adapter."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from ..config import Settings
from ..errors import UnknownProvider
from .base import Provider

BUILT_IN = ("openai", "anthropic", "gemini", "bedrock", "azure", "mock")
# The providers that take images only as bytes: http(s) image URLs are fetched and inlined
# for them (images.py, which only their requests import).
INLINED_FOR = frozenset({"anthropic", "gemini", "bedrock"})


class ProviderRegistry:
    """Builds adapters from settings only: base URLs and server keys never come from requests."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http

    def names(self) -> list[str]:
        return [*BUILT_IN, *sorted(self._settings.compat_endpoints)]

    def speaks_openai(self, name: str) -> bool:
        """Whether the provider takes Chat Completions bodies (OpenAI's own fields, natively).
        The mock does, the way a compatible server does: it ignores the fields it has no use
        for, so the OpenAI face can be tried (and fuzzed) with any field OpenAI takes."""
        return name in ("openai", "azure", "mock") or name in self._settings.compat_endpoints

    def configured(self) -> list[str]:
        """The providers this deployment can serve without a key in the request: a server
        key or endpoint is set (Bedrock: a region); the mock only where the demo is on."""
        s = self._settings
        ready = {
            "openai": _present(s.openai_api_key),
            "anthropic": _present(s.anthropic_api_key),
            "gemini": _present(s.gemini_api_key),
            "azure": bool(s.azure_openai_endpoint),
            "bedrock": bool(s.bedrock_region),
            "mock": s.demo_enabled,
        }
        return [name for name in self.names() if ready.get(name, name in s.compat_endpoints)]

    def resolve(self, name: str) -> Provider:
        """The adapter for `name`, or UnknownProvider (400) listing the ones that exist."""
        s, http = self._settings, self._http
        # Imports are local so a cold start loads only the adapter it uses.
        if name == "mock":
            from .mock import MockProvider

            return MockProvider()
        if name == "openai":
            from .openai import OpenAIProvider

            return OpenAIProvider("openai", http, s.openai_base_url, s.openai_api_key)
        if name == "azure":
            from .azure import AzureOpenAIProvider

            return AzureOpenAIProvider(http, s)
        if name == "anthropic":
            from .anthropic import AnthropicProvider

            return AnthropicProvider(http, s)
        if name == "gemini":
            from .gemini import GeminiProvider

            return GeminiProvider(http, s)
        if name == "bedrock":
            from .bedrock import BedrockProvider

            return BedrockProvider(s)
        if name in s.compat_endpoints:
            from .openai import OpenAIProvider

            endpoint = s.compat_endpoints[name]
            return OpenAIProvider(
                name, http, endpoint.base_url, endpoint.api_key, key_optional=True, compatible=True
            )
        raise UnknownProvider(
            f"unknown provider '{name}'", details="known providers: " + ", ".join(self.names())
        )


def _present(key: SecretStr | None) -> bool:
    # An empty variable (GEMINI_API_KEY="") configures nothing.
    return key is not None and bool(key.get_secret_value())
