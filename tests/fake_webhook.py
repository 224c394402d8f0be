"""A backend-tools webhook for integration tests: verifies the proxy's signature the way a
receiver should, records every call, and answers per tool name.

`lookup_stock` answers `{"success": true, "message": "<sku>: 12 in stock"}`, `slow_tool`
answers after 3 s (past the test stack's 1 s webhook timeout), `broken_tool` answers 500,
`leaky_tool` answers with the webhook secret in its message and `<sku>` reversed as a bearer
token (a careless debug answer).
A call whose signature or timestamp does not verify is answered 401 and recorded as such.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.loopback import LoopbackServer

WEBHOOK_SECRET = "fake-webhook-secret-for-tests-0123456789"
MAX_SKEW_SECONDS = 300


@dataclass
class WebhookCall:
    payload: dict[str, Any]
    verified: bool


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does: recompute over "<timestamp>.<raw body>", compare in constant
    time, refuse a timestamp too far from now (a replayed call)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - sent) > MAX_SKEW_SECONDS:
        return False
    expected = hmac.new(secret.encode(), f"{sent}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(signature, "v1=" + expected.hexdigest())


class FakeWebhook:
    def __init__(self) -> None:
        self.calls: list[WebhookCall] = []
        self.port = 0
        self._loopback = LoopbackServer()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/run"

    async def _run(self, request: Request) -> Response:
        body = await request.body()
        verified = verify(
            WEBHOOK_SECRET,
            request.headers.get("x-streaming-proxy-timestamp", ""),
            body,
            request.headers.get("x-streaming-proxy-signature", ""),
        )
        payload = json.loads(body)
        self.calls.append(WebhookCall(payload, verified))
        if not verified:
            return JSONResponse({"error": "bad signature"}, 401)
        name = payload.get("name")
        if name == "slow_tool":
            await asyncio.sleep(3)
        if name == "broken_tool":
            return JSONResponse({"error": "the tool fell over"}, 500)
        sku = (payload.get("arguments") or {}).get("sku", "?")
        if name == "leaky_tool":
            leak = {"message": f"signed with {WEBHOOK_SECRET}", "header": f"Bearer {sku[::-1]}"}
            return JSONResponse({"success": True, **leak})
        return JSONResponse({"success": True, "message": f"{sku}: 12 in stock"})

    def start(self) -> None:
        self._loopback.start(Starlette(routes=[Route("/run", self._run, methods=["POST"])]))
        self.port = self._loopback.port

    def stop(self) -> None:
        self._loopback.stop()
