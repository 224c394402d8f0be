"""LLM provider adapters: each turns one provider's stream into normalised events."""

from .base import LlmRequest, Provider
from .registry import ProviderRegistry

__all__ = ["LlmRequest", "Provider", "ProviderRegistry"]
