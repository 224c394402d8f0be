"""The provider client serves every app: a cookie a provider (or a proxy in front of it)
sets for one app's request is never kept, so it never goes with another app's."""

from __future__ import annotations

import httpx

from streaming_proxy.config import Settings
from streaming_proxy.nethttp import cookieless
from streaming_proxy.service import StreamService


def set_cookie(client: httpx.AsyncClient, host: str) -> None:
    """What httpx does with every answer's headers."""
    request = httpx.Request("POST", f"https://{host}/v1/chat/completions")
    headers = [("set-cookie", "__cf_bm=app-a-session; Path=/; Secure"), ("set-cookie", "b=1")]
    client.cookies.extract_cookies(httpx.Response(200, headers=headers, request=request))


async def test_the_provider_client_keeps_no_cookie(aws_env: None) -> None:
    service = StreamService(Settings(table_name="t", aws_region="us-east-1"))
    try:
        set_cookie(service.http, "api.openai.com")
        assert not service.http.cookies
        sent = service.http.build_request("POST", "https://api.openai.com/v1/chat/completions")
        assert "cookie" not in sent.headers
    finally:
        await service.aclose()


def test_a_cookieless_jar_refuses_every_domain() -> None:
    client = httpx.AsyncClient(cookies=cookieless())
    for host in ("api.anthropic.com", "127.0.0.1", "localhost"):
        set_cookie(client, host)
    assert not client.cookies
