"""An error nobody expected on a page route still reaches the page: its 500 carries
`Access-Control-Allow-Origin` like every other answer there (api/pagecors.py)."""

from __future__ import annotations

from types import SimpleNamespace

import httpx

from streaming_proxy.api.app import create_app
from streaming_proxy.config import Settings

PAGE = "https://pages.example"


class BrokenApps:
    def verify_token(self, token: str) -> None:
        raise RuntimeError("the registry broke")


async def test_an_unexpected_error_on_a_page_route_is_readable_by_the_page() -> None:
    app = create_app()
    app.state.service = SimpleNamespace(
        settings=Settings(allowed_origins=[PAGE]), apps=BrokenApps()
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://x"
    ) as client:
        r = await client.post(
            "/llm/query/stop",
            json={"streamId": "st_nope"},
            headers={"Origin": PAGE, "X-Subscribe-Token": "a-token"},
        )
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "internal_error"
    assert r.headers["access-control-allow-origin"] == PAGE
