"""A fault of ours (an exception no handler expects) is answered as a JSON 500 and goes no
further: raised on to the server, uvicorn would drop the connection after the answer, and a
keep-alive client's next request on it would fail too."""

from __future__ import annotations

import httpx
import pytest

from streaming_proxy.api.app import create_app


class BrokenService:
    @property
    def settings(self) -> object:
        raise RuntimeError("a bug")


@pytest.mark.parametrize(
    ("path", "shape"), [("/llm/query", "klai"), ("/v1/chat/completions", "openai")]
)
async def test_an_unexpected_error_is_a_json_500_and_is_not_raised_to_the_server(
    path: str, shape: str
) -> None:
    app = create_app()
    app.state.service = BrokenService()
    # The transport raises what the app raises on, as a server would see it.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        r = await client.post(path, json={})
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["message"] == "internal error"
    assert ("success" in r.json()) == (shape == "klai")
