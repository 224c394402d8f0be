"""Backend tools: each call POSTed to the app's webhook, signed so the receiver can trust it.

The body is JSON `{appId, streamId, toolCallId, name, arguments, channels, actionName}`.
`X-Streaming-Proxy-Timestamp` holds the Unix time of sending and
`X-Streaming-Proxy-Signature` is `v1=` + hex HMAC-SHA256, keyed with the webhook secret,
of `<timestamp>.<raw body>`. The receiver recomputes it over the bytes it received,
compares in constant time, and refuses timestamps more than 5 minutes off (replays). The
JSON object it answers (2xx) is what the model gets as the tool's result.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from ..config import ToolWebhook
from ..errors import BadRequest
from ..nethttp import PLAIN, compression
from ..observability import get_logger
from ..textcheck import parse_json

TIMESTAMP_HEADER = "X-Streaming-Proxy-Timestamp"
SIGNATURE_HEADER = "X-Streaming-Proxy-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`: what the receiver recomputes."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def failure(message: str) -> dict[str, Any]:
    """A tool result telling the model the tool could not run (it goes on from there)."""
    return {"success": False, "message": message}


class ToolWebhooks:
    """Calls apps' tool webhooks on the proxy's shared HTTP client."""

    def __init__(self, http: httpx.AsyncClient, *, timeout_seconds: float, max_bytes: int) -> None:
        self._http = http
        self._timeout = timeout_seconds
        self._max_bytes = max_bytes

    async def call(self, hook: ToolWebhook, payload: dict[str, Any]) -> dict[str, Any]:
        """The webhook's JSON answer, or a failure result saying what went wrong (never
        raises for what it is given or answered). `timeout_seconds` bounds the whole call."""
        try:
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except (ValueError, RecursionError):  # a lone surrogate, say: no UTF-8 for it
            return failure("the tool's arguments could not be sent (not valid JSON text)")
        sent = int(time.time())
        headers = {
            "Content-Type": "application/json",
            **PLAIN,
            TIMESTAMP_HEADER: str(sent),
            SIGNATURE_HEADER: signature(hook.secret.get_secret_value(), sent, body),
        }
        try:
            # httpx's timeout bounds each read, not the answer: a slow drip never trips it.
            async with asyncio.timeout(self._timeout):
                return await self._exchange(hook.url, body, headers)
        except (TimeoutError, httpx.TimeoutException):
            return failure(f"the tool did not answer within {self._timeout:g} seconds")
        except httpx.HTTPError as e:
            get_logger().warning("tool webhook unreachable", extra={"error": type(e).__name__})
            return failure(f"the tool could not be reached ({type(e).__name__})")

    async def _exchange(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """POST and read the answer, no further than `max_bytes` (leaving the block early
        drops the connection, so the rest is never read)."""
        async with self._http.stream(
            "POST",
            url,
            content=body,
            headers=headers,
            timeout=self._timeout,
            follow_redirects=False,  # the URL is the app's; a redirect could point anywhere
        ) as answer:
            if not answer.is_success:
                return failure(f"the tool failed (its webhook answered HTTP {answer.status_code})")
            encoding = compression(answer)  # never inflated (nethttp.PLAIN)
            if encoding is not None:
                return failure(f"the tool's answer was compressed ({encoding}); send it plain")
            content = bytearray()
            async for chunk in answer.aiter_bytes():
                content += chunk
                if len(content) > self._max_bytes:
                    return failure(f"the tool's answer was over {self._max_bytes} bytes")
        try:
            value = parse_json(bytes(content), "its body")
        except BadRequest as e:
            return failure(f"the tool's answer could not be used: {e.message}")
        return value if isinstance(value, dict) else {"success": True, "data": value}
