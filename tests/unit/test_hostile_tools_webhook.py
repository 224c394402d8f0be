"""Backend tool webhooks share the proxy's one HTTP client with every app and provider:
nothing one webhook answers may reach another app's webhook."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from streaming_proxy.config import ToolWebhook
from streaming_proxy.tools.webhook import ToolWebhooks


async def test_a_cookie_one_apps_webhook_sets_never_reaches_another_apps() -> None:
    # Two apps' webhooks on one host (a FileMaker server hosting several solutions): the
    # client's cookie jar kept app A's session cookie and sent it to app B.
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.headers.get("cookie")
        headers = {"set-cookie": "session=app-a-session; Path=/"}
        return httpx.Response(200, json={"success": True}, headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        hooks = ToolWebhooks(http, timeout_seconds=5, max_bytes=1024)
        for app in ("a", "b", "a"):
            hook = ToolWebhook(url=f"https://fms.example.com/{app}", secret=SecretStr("s" * 32))
            assert (await hooks.call(hook, {"name": "t"}))["success"] is True
        assert seen == {"/a": None, "/b": None}
