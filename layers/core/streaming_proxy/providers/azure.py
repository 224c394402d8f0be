"""Azure OpenAI: the Chat Completions stream at a deployment URL, authenticated with `api-key`."""

from __future__ import annotations

import re

import httpx

from ..config import Settings
from ..errors import ProviderNotConfigured, ValidationFailed
from .base import LlmRequest, pick_key
from .openai import OpenAIProvider

# Azure deployment names; anything else could walk the URL path (the model becomes a segment).
_DEPLOYMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AzureOpenAIProvider(OpenAIProvider):
    """`payload.model` names the deployment; the parsing is OpenAIProvider's."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        endpoint = (settings.azure_openai_endpoint or "").rstrip("/")
        super().__init__("azure", http, endpoint, settings.azure_openai_api_key)
        self._api_version = settings.azure_openai_api_version

    def prepare(self, request: LlmRequest) -> None:
        """Reject a server without an endpoint, a missing or malformed deployment, no key."""
        if not self._base_url:
            raise ProviderNotConfigured(
                "provider 'azure' is not configured: the server has no AZURE_OPENAI_ENDPOINT"
            )
        if not request.model:
            raise ValidationFailed("payload.model (the Azure deployment name) is required")
        if not _DEPLOYMENT.match(request.model):
            raise ValidationFailed(
                "payload.model must be an Azure deployment name "
                "(letters, digits, '.', '_' and '-', at most 64 characters)"
            )
        pick_key(request, self._server_key, self.name)
        self._body(request)

    def _url(self, request: LlmRequest) -> str:
        return (
            f"{self._base_url}/openai/deployments/{request.model}/chat/completions"
            f"?api-version={self._api_version}"
        )

    def _headers(self, request: LlmRequest) -> dict[str, str]:
        return {"api-key": pick_key(request, self._server_key, self.name)}
