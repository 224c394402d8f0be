"""WebSocket routes: `$connect` auth, `$disconnect` cleanup, and the browser's `action` messages."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from .. import aws, redact
from ..auth import AppRegistry
from ..blocking import dependency_error
from ..config import Settings
from ..envelopes import MAX_SNAPSHOT_MESSAGE_BYTES, encode, snapshot_messages
from ..errors import BadRequest, ConnectionGone, Forbidden, NotFound, ProxyError
from ..observability import get_logger
from ..streams import StreamRecord, StreamStore
from ..threadpages import history_replies, read_page
from ..threads import ThreadStore
from ..toolcalls import ToolCallStore
from ..tools.answers import accept_answer
from .browser import (
    BrowserMessage,
    History,
    Ping,
    Resume,
    Stop,
    Subscribe,
    ToolCallResponse,
    Unsubscribe,
    error_message,
    parse_browser_message,
    request_of,
)
from .names import check_grantable, is_private, private_channel
from .poster import post_blocking
from .store import ConnectionStore, LiveConnection

# What the browser is told is unavailable, in the HTTP routes' words (dependencies.STORE).
STORE = "the stream store (DynamoDB)"

Reply = Callable[[str, dict[str, Any]], bool]
"""Sends one JSON message to one connection; False when the connection is gone (410)."""


def record_snapshot(record: StreamRecord, channel: str) -> list[dict[str, Any]]:
    """The `snapshot` reply to `resume`, from the stored record (in parts when large)."""
    base: dict[str, Any] = {
        "type": "snapshot",
        "actionName": record.action_name,
        "channel": channel,
        "streamId": record.stream_id,
        "seq": record.last_seq,
        "status": record.status,
    }
    if record.finish_reason is not None:
        base["finish_reason"] = record.finish_reason
    if record.usage is not None:
        base["usage"] = record.usage
    if record.text_truncated:
        base["truncated"] = True  # only the tail of a very long answer was kept
    return snapshot_messages(base, record.text, MAX_SNAPSHOT_MESSAGE_BYTES)


class ManagementApiReply:
    """Replies through `PostToConnection`; a gone connection's rows are removed, not raised."""

    def __init__(self, region: str, endpoint: str | None, connections: ConnectionStore) -> None:
        self._region = region
        self._endpoint = endpoint
        self._connections = connections

    def __call__(self, connection_id: str, message: dict[str, Any]) -> bool:
        if not self._endpoint:
            raise RuntimeError("WS_MANAGEMENT_ENDPOINT is not set: cannot reply to connections")
        # The client is created on first reply: $connect and $disconnect never need it.
        client = aws.management_api(self._region, self._endpoint)
        try:
            post_blocking(client, connection_id, encode(message))
        except ConnectionGone:
            get_logger().info("reply to a gone connection; removing it")
            self._connections.close(connection_id)
            return False
        return True


class ConnectionRoutes:
    """The three WebSocket routes; blocking (boto3), free of Lambda specifics."""

    def __init__(
        self,
        *,
        settings: Settings,
        connections: ConnectionStore,
        streams: StreamStore,
        registry: AppRegistry,
        reply: Reply,
        tool_calls: ToolCallStore,
        threads: ThreadStore,
    ) -> None:
        self._settings = settings
        self._connections = connections
        self._streams = streams
        self._registry = registry
        self._reply = reply
        self._tool_calls = tool_calls
        self._threads = threads

    @classmethod
    def from_settings(cls, settings: Settings, *, reply: Reply | None = None) -> ConnectionRoutes:
        """Routes over the configured table; `reply` defaults to the management API."""
        redact.remember(*settings.secret_values())
        db = aws.dynamodb(settings.aws_region, settings.dynamodb_endpoint_url)
        connections = ConnectionStore(db, settings.table_name, settings.connection_ttl_seconds)
        return cls(
            settings=settings,
            connections=connections,
            streams=StreamStore(db, settings.table_name, settings.stream_ttl_seconds),
            registry=AppRegistry.from_settings(settings),
            reply=reply
            or ManagementApiReply(
                settings.aws_region, settings.ws_management_endpoint, connections
            ),
            tool_calls=ToolCallStore(db, settings.table_name),
            threads=ThreadStore(db, settings.table_name),
        )

    def connect(self, connection_id: str, token: str | None, origin: str | None) -> None:
        """Admit a connection holding a valid subscribe token (and allowed Origin), or raise."""
        allowed = self._settings.allowed_origins
        if "*" not in allowed and origin not in allowed:
            raise Forbidden("origin not allowed")
        claims = self._registry.verify_token(token)
        check_grantable(sorted(claims.channels))
        channels = claims.channels | {private_channel(connection_id)}
        self._connections.open(connection_id, claims.app_id, channels)

    def disconnect(self, connection_id: str) -> None:
        self._connections.close(connection_id)

    def message(self, connection_id: str, body: str | None) -> None:
        """Handle one browser message; every outcome, refusals included, is a reply."""
        try:
            replies = self._handle(connection_id, parse_browser_message(body))
        except ProxyError as e:
            replies = [error_message(e, request_of(body))]
        except Exception as e:
            # A bad message must never fail the route: the browser always gets an answer.
            # DynamoDB down is `dependency_unavailable` (503), as over HTTP, so the page knows
            # to send it again (a tool answer then is taken), not an internal error.
            unavailable = dependency_error(e, STORE)
            if unavailable is None:
                get_logger().exception("browser message failed")
            else:
                get_logger().warning("dependency call failed", exc_info=True)
            error = unavailable or ProxyError("internal error")
            replies = [error_message(error, request_of(body))]
        for reply in replies:
            try:
                # A gone connection takes nothing more (the other parts of a snapshot, say).
                if not self._reply(connection_id, reply):
                    return
            except Exception as e:
                # The reply was not taken (refused, the API down): the page is told if it can
                # be, and a failed post never fails the route (API Gateway would answer its own
                # error, outside the action-error shape).
                get_logger().warning("reply failed", exc_info=True)
                failure = e if isinstance(e, ProxyError) else ProxyError("internal error")
                with contextlib.suppress(Exception):
                    self._reply(connection_id, error_message(failure, request_of(body)))
                return

    def _handle(self, connection_id: str, msg: BrowserMessage) -> list[dict[str, Any]]:
        if isinstance(msg, Ping):
            pong: dict[str, Any] = {"type": "pong", "connectionId": connection_id}
            if msg.id is not None:
                pong["id"] = msg.id
            return [pong]
        connection = self._live(connection_id)
        app_id = connection.app_id
        match msg:
            case Subscribe():
                return [self._subscribe(connection, msg)]
            case Unsubscribe():
                if msg.channel == private_channel(connection_id):
                    raise Forbidden("a connection cannot leave its private channel")
                self._connections.remove(connection_id, app_id, msg.channel)
                return [{"type": "unsubscribed", "channel": msg.channel}]
            case Stop():
                return [self._stop(connection_id, app_id, msg)]
            case Resume():
                record, channel = self._visible_stream(
                    connection_id, app_id, msg.stream_id, text=True
                )
                if record is None:
                    return [{"type": "not_found", "streamId": msg.stream_id}]
                return record_snapshot(record, channel)
            case History():
                return self._history(connection_id, app_id, msg)
            case ToolCallResponse():
                accept_answer(
                    self._tool_calls,
                    app_id,
                    msg.tool_call_id,
                    msg.answer(),
                    channels=self._connections.channels_of(connection_id, app_id),
                    by=msg.sender(connection_id),
                    max_bytes=self._settings.tool_answer_max_bytes,
                )
                return [{"type": "ack", "toolCallId": msg.tool_call_id}]
        raise BadRequest("unknown action")

    def _history(self, connection_id: str, app_id: str, msg: History) -> list[dict[str, Any]]:
        """A page of a thread that published to one of this connection's channels; any
        other (another app's, unknown, never on these channels) is `not_found`."""
        joined = self._connections.channels_of(connection_id, app_id)
        try:
            page = read_page(self._threads, app_id, msg.thread_id, msg.cursor, msg.limit, joined)
        except NotFound:
            return [{"type": "not_found", "threadId": msg.thread_id}]
        return history_replies(page)

    def _live(self, connection_id: str) -> LiveConnection:
        connection = self._connections.live(connection_id)
        if connection is None:
            raise Forbidden("unknown connection: reconnect with a subscribe token")
        return connection

    def _subscribe(self, connection: LiveConnection, msg: Subscribe) -> dict[str, Any]:
        if is_private(msg.channel):
            # A connection is in its own private channel from the start, and in no other.
            if msg.channel != private_channel(connection.connection_id):
                check_grantable([msg.channel])
            return {"type": "subscribed", "channel": msg.channel}
        claims = self._registry.verify_token(msg.token)
        if claims.app_id != connection.app_id:
            raise Forbidden("token belongs to another app than this connection")
        if not claims.covers(msg.channel):
            raise Forbidden(f"token does not cover channel {msg.channel!r}")
        self._connections.add(connection, [msg.channel])
        return {"type": "subscribed", "channel": msg.channel}

    def _stop(self, connection_id: str, app_id: str, msg: Stop) -> dict[str, Any]:
        record, _ = self._visible_stream(connection_id, app_id, msg.stream_id)
        if record is None:
            return {"type": "not_found", "streamId": msg.stream_id}
        # Like the stop endpoint: an ended stream answers gracefully and is left untouched.
        if not record.finished and self._streams.request_cancel(msg.stream_id) is None:
            return {"type": "not_found", "streamId": msg.stream_id}
        return {"type": "stopped", "streamId": msg.stream_id, "streamStatus": record.status}

    def _visible_stream(
        self, connection_id: str, app_id: str, stream_id: str, *, text: bool = False
    ) -> tuple[StreamRecord | None, str]:
        """The stream and the first of its channels this connection is in.

        Another app's stream does not exist for this connection (not found, so nothing
        about it leaks); one of this app on channels the connection is not in is Forbidden.
        """
        record = self._streams.get(stream_id, text=text)
        if record is None or record.app_id != app_id:
            return None, ""
        joined = self._connections.channels_of(connection_id, app_id)
        shared = [channel for channel in record.channels if channel in joined]
        if not shared:
            raise Forbidden("stream is not on a channel this connection is in")
        return record, shared[0]
