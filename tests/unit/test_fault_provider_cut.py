"""An upstream body that ends cleanly before the provider said it finished is a cut answer."""

from __future__ import annotations

from streaming_proxy.errors import UpstreamError
from streaming_proxy.events import ProviderEvent, TextDelta

from .providers_fixtures import FakeUpstream, fixture_bytes
from .test_provider_gemini import provider, request


def frames(name: str) -> list[bytes]:
    return [frame + b"\n\n" for frame in fixture_bytes(name).split(b"\n\n") if frame.strip()]


async def read_until_failure(upstream: FakeUpstream) -> tuple[list[ProviderEvent], Exception]:
    events: list[ProviderEvent] = []
    async with upstream.client() as http:
        try:
            async for event in provider(http).stream(request()):
                events.append(event)
        except Exception as e:
            return events, e
    raise AssertionError(f"the stream ended without an error: {events}")


async def test_a_gemini_body_that_ends_before_its_finish_reason_is_an_error_not_a_stop() -> None:
    # The last response (the one with `finishReason`) never comes: the body just ends, as a
    # close-delimited answer cut mid-stream does, or a gateway closing its chunked body.
    events, error = await read_until_failure(FakeUpstream(frames("gemini/text.sse")[:-1]))
    assert isinstance(error, UpstreamError) and "ended early" in error.message
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta("héllo — "),
        TextDelta("日本語 🎉"),
    ]


async def test_an_empty_gemini_body_is_an_error() -> None:
    _, error = await read_until_failure(FakeUpstream([b""]))
    assert isinstance(error, UpstreamError) and "ended early" in error.message
