"""The provider boundary: events pass through repaired, never losing what they carry."""

from __future__ import annotations

from collections.abc import AsyncIterator

from streaming_proxy.events import ProviderEvent, ToolCallDelta
from streaming_proxy.upstream import guarded


async def test_repairing_a_tool_call_keeps_its_signature() -> None:
    async def events() -> AsyncIterator[ProviderEvent]:
        yield ToolCallDelta(0, id="c1", name="f\ud800", arguments="{}", signature="sig-A")

    seen = [event async for event in guarded(events())]

    assert seen == [ToolCallDelta(0, id="c1", name="f\ufffd", arguments="{}", signature="sig-A")]
