"""The WebSocket API's Lambda events ($connect, $disconnect, a message) as pydantic models.

Only the fields the routes read. Powertools' parser has complete models, but importing
any of them builds every event model the parser ships (~100 ms of each cold start)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter


class _RequestContext(BaseModel):
    connection_id: str = Field(alias="connectionId")
    route_key: str = Field(alias="routeKey")


class ConnectContext(_RequestContext):
    event_type: Literal["CONNECT"] = Field(alias="eventType")


class DisconnectContext(_RequestContext):
    event_type: Literal["DISCONNECT"] = Field(alias="eventType")


class MessageContext(_RequestContext):
    event_type: Literal["MESSAGE"] = Field(alias="eventType")


class ConnectEvent(BaseModel):
    """`$connect`: the subscribe token travels in the query string, the origin in a header."""

    headers: dict[str, str]
    query_string_parameters: dict[str, str] | None = Field(None, alias="queryStringParameters")
    request_context: ConnectContext = Field(alias="requestContext")


class DisconnectEvent(BaseModel):
    request_context: DisconnectContext = Field(alias="requestContext")


class MessageEvent(BaseModel):
    """A browser's frame on the `$default` route (text; None when it sent none)."""

    request_context: MessageContext = Field(alias="requestContext")
    body: str | None = None


WebSocketEvent: TypeAdapter[ConnectEvent | DisconnectEvent | MessageEvent] = TypeAdapter(
    ConnectEvent | DisconnectEvent | MessageEvent
)
