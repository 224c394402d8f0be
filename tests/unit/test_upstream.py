"""The provider boundary: events pass through repaired, never losing what they carry."""

from __future__ import annotations

import httpx
import pytest

from streaming_proxy.errors import ProxyError, UpstreamError, UpstreamTimeout
from streaming_proxy.events import ToolCallDelta
from streaming_proxy.upstream import as_proxy_error, valid


def test_repairing_a_tool_call_keeps_its_signature() -> None:
    event = ToolCallDelta(0, id="c1", name="f\ud800", arguments="{}", signature="sig-A")

    assert valid(event) == ToolCallDelta(
        0, id="c1", name="f\ufffd", arguments="{}", signature="sig-A"
    )


@pytest.mark.parametrize(
    ("raised", "kind", "status"),
    [
        (httpx.ReadTimeout("slow"), UpstreamTimeout, 504),
        (httpx.RemoteProtocolError("cut"), UpstreamError, 502),
        (UpstreamError("from the adapter", upstream_status=429), UpstreamError, 429),
        (RuntimeError("a bug, with internals"), ProxyError, 500),
    ],
)
def test_what_a_provider_stream_raises_becomes_an_error_of_the_tree(
    raised: Exception, kind: type[ProxyError], status: int
) -> None:
    error = as_proxy_error(raised)
    assert type(error) is kind and error.status == status
    assert "internals" not in error.message
