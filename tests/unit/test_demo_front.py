"""The local stack serves the product app as the stream function does: the demo page's
routes sit beside it, not around it."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from devstack.demo import DemoFront


class Recorder:
    """An ASGI app that notes the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append((scope.get("path", scope["type"]), send))


async def _receive() -> Message:
    return {"type": "http.disconnect"}


async def _send(message: Message) -> None:
    return None


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/llm/query", "/health", "/nowhere", "/demos", "/webhook"]
)
async def test_a_product_request_reaches_the_product_with_the_servers_own_send(path: str) -> None:
    demo, product = Recorder(), Recorder()
    await DemoFront(demo, product)({"type": "http", "path": path}, _receive, _send)
    assert product.calls == [(path, _send)] and demo.calls == []


@pytest.mark.parametrize("path", ["/", "/demo/start", "/demo/config", "/web/app.js", "/web"])
async def test_the_demo_pages_paths_go_to_the_demo(path: str) -> None:
    demo, product = Recorder(), Recorder()
    await DemoFront(demo, product)({"type": "http", "path": path}, _receive, _send)
    assert demo.calls == [(path, _send)] and product.calls == []


async def test_the_lifespan_is_the_products() -> None:
    demo, product = Recorder(), Recorder()
    await DemoFront(demo, product)({"type": "lifespan"}, _receive, _send)
    assert product.calls == [("lifespan", _send)] and demo.calls == []
