"""Backend tools: each call POSTed to the app's webhook, signed so the receiver can trust it.

The body is JSON `{appId, streamId, toolCallId, name, arguments, channels, actionName}`.
`X-Streaming-Proxy-Timestamp` holds the Unix time of sending and
`X-Streaming-Proxy-Signature` is `v1=` + hex HMAC-SHA256, keyed with the webhook secret,
of `<timestamp>.<raw body>`. The receiver recomputes it over the bytes it received,
compares in constant time, and refuses timestamps more than 5 minutes off (replays). The
JSON object it answers (2xx) is what the model gets as the tool's result.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from ..config import ToolWebhook
from ..observability import get_logger

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
        """The webhook's JSON answer, or a failure result saying what went wrong."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        sent = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(sent),
            SIGNATURE_HEADER: signature(hook.secret.get_secret_value(), sent, body),
        }
        try:
            answer = await self._http.post(
                hook.url, content=body, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException:
            return failure(f"the tool did not answer within {self._timeout:g} seconds")
        except httpx.HTTPError as e:
            get_logger().warning("tool webhook unreachable", extra={"error": type(e).__name__})
            return failure(f"the tool could not be reached ({type(e).__name__})")
        if not answer.is_success:
            return failure(f"the tool failed (its webhook answered HTTP {answer.status_code})")
        if len(answer.content) > self._max_bytes:
            return failure(f"the tool's answer was over {self._max_bytes} bytes")
        try:
            value = answer.json()
        except ValueError:
            return failure("the tool's answer was not JSON")
        return value if isinstance(value, dict) else {"success": True, "data": value}
