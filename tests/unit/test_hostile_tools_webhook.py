"""Backend tool webhooks share the proxy's one HTTP client with every app and provider:
nothing one webhook answers may reach another app's webhook."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import AsyncIterator

import httpx
from pydantic import SecretStr

from streaming_proxy.config import ToolWebhook
from streaming_proxy.nethttp import cookieless
from streaming_proxy.tools.webhook import ToolWebhooks


async def test_a_cookie_one_apps_webhook_sets_never_reaches_another_apps() -> None:
    # Two apps' webhooks on one host (a FileMaker server hosting several solutions): the
    # client's cookie jar kept app A's session cookie and sent it to app B.
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.headers.get("cookie")
        headers = {"set-cookie": "session=app-a-session; Path=/"}
        return httpx.Response(200, json={"success": True}, headers=headers)

    # The webhooks' client is the service's: it keeps no cookie (nethttp.cookieless).
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), cookies=cookieless())
    async with client as http:
        hooks = ToolWebhooks(http, timeout_seconds=5, max_bytes=1024)
        for app in ("a", "b", "a"):
            hook = ToolWebhook(url=f"https://fms.example.com/{app}", secret=SecretStr("s" * 32))
            assert (await hooks.call(hook, {"name": "t"}))["success"] is True
        assert seen == {"/a": None, "/b": None}


def gzip_bomb(megabytes: int) -> bytes:
    """`megabytes` MiB of zeros, gzip-compressed (about a thousandth of that)."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    zeros = bytes(1 << 20)
    return b"".join([*(squeeze.compress(zeros) for _ in range(megabytes)), squeeze.flush()])


async def test_a_compressed_answer_is_never_inflated_past_the_size_cap() -> None:
    # The cap counted bytes after decoding, but httpx inflates each network chunk whole:
    # 64 KiB of gzip became 64 MiB in memory before the cap was looked at.
    bomb = gzip_bomb(64)
    asked: list[str | None] = []

    async def network() -> AsyncIterator[bytes]:  # as a socket hands it over
        for start in range(0, len(bomb), 65_536):
            yield bomb[start : start + 65_536]

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("accept-encoding"))
        return httpx.Response(200, content=network(), headers={"content-encoding": "gzip"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        hooks = ToolWebhooks(http, timeout_seconds=5, max_bytes=65_536)
        hook = ToolWebhook(url="https://fms.example.com/a", secret=SecretStr("s" * 32))
        tracemalloc.start()
        try:
            result = await hooks.call(hook, {"name": "t"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20, f"{peak >> 20} MiB at the peak"
    assert result["success"] is False and "compressed" in result["message"], result
    assert asked == ["identity"]  # asked for no compression at all
