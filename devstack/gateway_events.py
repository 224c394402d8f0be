"""API Gateway-shaped events for the emulator's connections handler, and Lambda's context.

`$connect`, `$disconnect` and `$default` events carry what API Gateway's do (headers, query,
request context with ids, times and the close code), so the handler parses them with
Powertools' models exactly as in AWS.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from .gateway_clients import Client, Message

# API Gateway's integration timeout.
INTEGRATION_TIMEOUT_SECONDS = 29.0


def _epoch_ms(wall: float) -> int:
    return int(wall * 1000)


def _request_time(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def _header_name(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-")).replace("Websocket", "WebSocket")


@dataclass
class LambdaContext:
    """The subset of Lambda's context object that Powertools reads."""

    function_name: str = "ConnectionsFunction"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:ConnectionsFunction"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/ConnectionsFunction"
    log_stream_name: str = "devstack"
    deadline: float = field(default_factory=lambda: time.monotonic() + INTEGRATION_TIMEOUT_SECONDS)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class EventShapes:
    """Builds one API's events: its stage, its id and the Host its clients see."""

    def __init__(self, stage: str, api_id: str, host_header: str | None) -> None:
        self.stage = stage
        self.api_id = api_id
        self.host_header = host_header

    def context(self, client: Client, route: str, kind: str) -> dict[str, Any]:
        now = time.time()
        request_id = base64.b64encode(secrets.token_bytes(11)).decode("ascii")
        host = self.domain(client)
        identity: dict[str, Any] = {"sourceIp": client.source_ip}
        if client.user_agent and kind != "MESSAGE":
            identity["userAgent"] = client.user_agent
        return {
            "routeKey": route,
            "eventType": kind,
            "extendedRequestId": request_id,
            "requestTime": _request_time(now),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": _epoch_ms(client.connected_at),
            "requestTimeEpoch": _epoch_ms(now),
            "identity": identity,
            "requestId": request_id,
            "domainName": host,
            "connectionId": client.connection_id,
            "apiId": self.api_id,
        }

    def domain(self, client: Client) -> str:
        return self.host_header or client.websocket.headers.get("host") or "localhost"

    def connect(self, client: Client) -> dict[str, Any]:
        multi: dict[str, list[str]] = {}
        for name, value in client.websocket.headers.items():
            multi.setdefault(_header_name(name), []).append(value)
        multi["Host"] = [self.domain(client)]
        multi.setdefault("X-Forwarded-For", [client.source_ip])
        scheme = "https" if client.websocket.url.scheme == "wss" else "http"
        multi.setdefault("X-Forwarded-Proto", [scheme])
        event: dict[str, Any] = {
            "headers": {name: ",".join(values) for name, values in multi.items()},
            "multiValueHeaders": multi,
        }
        query = parse_qs(client.websocket.url.query, keep_blank_values=True)
        if query:
            event["queryStringParameters"] = {name: values[-1] for name, values in query.items()}
            event["multiValueQueryStringParameters"] = query
        event["requestContext"] = self.context(client, "$connect", "CONNECT")
        event["isBase64Encoded"] = False
        return event

    def disconnect(self, client: Client) -> dict[str, Any]:
        host = self.domain(client)
        headers = {"Host": host, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
        context = self.context(client, "$disconnect", "DISCONNECT")
        context["disconnectStatusCode"] = client.close_code or 1005
        context["disconnectReason"] = client.close_reason
        return {
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "requestContext": context,
            "isBase64Encoded": False,
        }

    def message(self, client: Client, message: Message) -> dict[str, Any]:
        context = self.context(client, "$default", "MESSAGE")
        context["messageId"] = base64.b64encode(secrets.token_bytes(11)).decode("ascii")
        # Text only: the emulator closes on a binary frame (1003), as API Gateway does.
        return {"requestContext": context, "body": message["text"], "isBase64Encoded": False}
