"""Unit-test requests as the service builds them: settings read out of providerArgs."""

from __future__ import annotations

from dataclasses import replace

from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.sampling import Source, normalise


def settled(request: LlmRequest) -> LlmRequest:
    """`request` with the settings in its provider_args and generation_config typed into
    `sampling`, and only the native pass-through keys left, as `StreamJob.llm_request` does."""
    sampling, (args, generation) = normalise(
        Source("payload.providerArgs.", request.provider_args),
        Source("payload.generationConfig.", request.generation_config or {}),
        args_prefix="payload.providerArgs.",
    )
    return replace(
        request, provider_args=args, generation_config=generation or None, sampling=sampling
    )
