"""API Gateway WebSocket emulator: routes clients to the connections handler, serves @connections.

One ASGI app on one port: the WebSocket endpoint (any path) turns a handshake, each
client message and each close into API Gateway-shaped `$connect` / `$default` /
`$disconnect` events for the handler (gateway_events.py), and `/@connections/{id}`
(optionally under `/{stage}`) answers boto3's `apigatewaymanagementapi` client like the
real management API. Starlette routes all of it except PostToConnection, which is served in
plain ASGI because it is the call a fan-out makes hundreds of times a second.
The handler is synchronous and posts back to this server, so it always runs in a worker
thread: run on the event loop it would wait for itself. `$disconnect` has threads of its own,
so a burst of closes never holds up other clients' handshakes and messages.
What a client may send is held to API Gateway's limits: frames over 32 KB and messages over
128 KB close with 1009 in the server (serve the app with `ws=GatewayProtocol`,
gateway_limits.py; it refuses clients otherwise), binary frames with 1003 here.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import secrets
import string
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from .gateway_clients import Client, Message, new_connection_id
from .gateway_events import INTEGRATION_TIMEOUT_SECONDS, EventShapes, LambdaContext
from .gateway_limits import MAX_MESSAGE_BYTES, GatewayProtocol, refusal_of

__all__ = ["GatewayEmulator", "GatewayProtocol", "Handler", "LambdaContext", "new_connection_id"]

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

# How long close_all waits for one connection's $disconnect to finish.
DISCONNECT_WAIT_SECONDS = 35.0
# Threads for `$disconnect` alone. In AWS every route call is a Lambda invocation of its own,
# so a burst of closes (200 subscribers leaving at once) never delays another client's
# handshake; here cleanups queue on these threads instead of ahead of `$connect` and
# `$default` in the loop's default executor. Few: the embedded DynamoDB answers one request
# at a time, so more threads would only queue there.
DISCONNECT_THREADS = 4

log = logging.getLogger(__name__)


def _iso(wall: float) -> str:
    return (
        datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class GatewayEmulator:
    """The local stand-in for an API Gateway WebSocket API and its @connections API."""

    def __init__(
        self,
        handler: Handler,
        *,
        stage: str = "dev",
        idle_timeout_seconds: float = 600,
        max_age_seconds: float = 7200,
        host_header: str | None = None,
    ) -> None:
        self._handler = handler
        self.stage = stage
        self.idle_timeout_seconds = idle_timeout_seconds
        self.max_age_seconds = max_age_seconds
        self.api_id = "".join(
            secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10)
        )
        self._events = EventShapes(stage, self.api_id, host_header)
        self._clients: dict[str, Client] = {}
        self._cleanups = ThreadPoolExecutor(
            DISCONNECT_THREADS, thread_name_prefix=f"disconnect-{self.api_id}"
        )
        methods = ["GET", "DELETE"]  # POST never gets here: see `app`
        self._routes = Starlette(
            routes=[
                Route("/@connections/{connection_id}", self._manage, methods=methods),
                Route("/{stage}/@connections/{connection_id}", self._manage, methods=methods),
                WebSocketRoute("/", self._serve),
                WebSocketRoute("/{path:path}", self._serve),
            ],
            lifespan=self._lifespan,
        )

        # A plain function, so servers see an ASGI 3 app (a bound method reads as ASGI 2).
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await self._dispatch(scope, receive, send)

        self.app = app

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """PostToConnection, the one hot call (every message to every subscriber), skips
        Starlette's middleware and routing: a benchmark fanning out to hundreds of
        subscribers measures the app, not this emulator's framework."""
        if scope["type"] == "http" and scope["method"] == "POST":
            connection_id = _posted_connection(scope["path"])
            if connection_id is not None:
                await self._post(connection_id, receive, send, scope)
                return
        await self._routes(scope, receive, send)

    def connection_ids(self) -> list[str]:
        """Ids of the open connections."""
        return [cid for cid, client in self._clients.items() if not client.closing]

    async def close_all(self) -> None:
        """Close every connection (1001 Going away) and wait for their `$disconnect`."""
        clients = list(self._clients.values())
        await asyncio.gather(*(self._close(c, 1001, "Going away") for c in clients))
        waits = [asyncio.wait_for(c.finished.wait(), DISCONNECT_WAIT_SECONDS) for c in clients]
        await asyncio.gather(*waits, return_exceptions=True)

    # --- lifespan and the expiry sweeper ------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(self._sweep())
        try:
            yield
        finally:
            sweeper.cancel()
            await self.close_all()
            # Every `$disconnect` has run (or outlived close_all's wait): its threads go once
            # idle, without holding up the server's exit behind a cleanup that hangs.
            self._cleanups.shutdown(wait=False, cancel_futures=True)

    async def _sweep(self) -> None:
        interval = min(1.0, max(0.01, min(self.idle_timeout_seconds, self.max_age_seconds) / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for client in list(self._clients.values()):
                try:
                    if now - client.opened >= self.max_age_seconds:
                        await self._close(client, 1001, "Going away: maximum connection age")
                    elif now - client.last_active >= self.idle_timeout_seconds:
                        await self._close(client, 1001, "Going away: idle timeout")
                except Exception:  # one bad connection must not stop the sweeper
                    log.exception("closing expired connection %s failed", client.connection_id)

    # --- the WebSocket side -------------------------------------------------------------

    async def _serve(self, websocket: WebSocket) -> None:
        if refusal_of(websocket.scope) is None:
            # Served without the frame limits, it would pass messages AWS refuses.
            log.error("the gateway emulator must be served with ws=GatewayProtocol")
            await websocket.send_denial_response(Response(status_code=500))
            return
        url = _connect_url(websocket.scope)
        if len(url) > MAX_URL_CHARS:
            # API Gateway's quota on a WebSocket API's URL: a connect token naming many (or
            # long) channels does not fit; the page connects with fewer and subscribes.
            message = f"the connect URL has {len(url)} characters, over {MAX_URL_CHARS}"
            body = json.dumps({"message": message})
            await websocket.send_denial_response(Response(body, 414, media_type="application/json"))
            return
        peer = websocket.client
        client = Client(
            connection_id=new_connection_id(),
            websocket=websocket,
            source_ip=peer.host if peer else "127.0.0.1",
            user_agent=websocket.headers.get("user-agent"),
        )
        answer = await self._invoke(self._events.connect(client))
        status = int(answer.get("statusCode", 200)) if answer is not None else 500
        if not 200 <= status < 300:
            body = (answer or {}).get("body") or json.dumps({"message": "Internal server error"})
            denial = Response(body, status_code=status, media_type="application/json")
            await websocket.send_denial_response(denial)
            return
        worker: asyncio.Task[None] | None = None
        try:
            await websocket.accept()
            self._clients[client.connection_id] = client
            worker = asyncio.create_task(self._run_messages(client))
            await self._receive_until_closed(client)
        except (WebSocketDisconnect, RuntimeError, OSError):
            client.close_code = client.close_code or 1006
        finally:
            # $connect succeeded, so $disconnect follows whatever happened since.
            self._clients.pop(client.connection_id, None)
            client.closing = True
            if worker is not None:
                await self._stop_worker(client, worker)
            await self._invoke(self._events.disconnect(client), self._cleanups)
            client.finished.set()

    async def _receive_until_closed(self, client: Client) -> None:
        """Queue each text message for `$default` until the connection closes. Frames over
        the size limits never get here (GatewayProtocol closes with 1009); a binary message
        closes with 1003, as API Gateway answers a binary frame."""
        while True:
            message = await client.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self._closed(client, message)
                return
            if message.get("text") is None:
                await self._close(client, 1003, "Binary frames are not supported")
                continue
            client.touch()
            await client.inbox.put(message)

    def _closed(self, client: Client, message: Message) -> None:
        """Record who closed: this emulator (`_close`), its server (a frame over a limit),
        else the client, as `$disconnect` will tell."""
        if client.close_code is not None:
            return
        note = refusal_of(client.websocket.scope) or {}
        if "code" in note:
            client.close_code, client.close_reason = int(note["code"]), str(note["reason"])
            return
        client.close_code = int(message.get("code") or 1005)
        client.close_reason = f"Client-side close frame status set to {client.close_code}"

    async def _run_messages(self, client: Client) -> None:
        """Invoke `$default` for each client message in arrival order."""
        while (message := await client.inbox.get()) is not None:
            if await self._invoke(self._events.message(client, message)) is None:
                # What API Gateway sends the client when the integration fails.
                error = {"message": "Internal server error", "connectionId": client.connection_id}
                await self._send(client, json.dumps(error).encode("utf-8"))

    async def _stop_worker(self, client: Client, worker: asyncio.Task[None]) -> None:
        """Drop messages not yet handled, let the one in flight finish, then stop."""
        while not client.inbox.empty():
            client.inbox.get_nowait()
        client.inbox.put_nowait(None)
        try:
            await asyncio.wait_for(worker, INTEGRATION_TIMEOUT_SECONDS + 1)
        except TimeoutError:
            log.warning("a $default invocation outlived the integration timeout")

    async def _invoke(
        self, event: dict[str, Any], threads: Executor | None = None
    ) -> dict[str, Any] | None:
        """Run the handler in a worker thread (of `threads`, else the loop's default
        executor), as `asyncio.to_thread` does; None when it raised."""
        call = functools.partial(
            contextvars.copy_context().run, self._handler, event, LambdaContext()
        )
        try:
            answer = await asyncio.get_running_loop().run_in_executor(threads, call)
        except Exception:
            log.exception("connections handler failed on %s", event["requestContext"]["routeKey"])
            return None
        return answer if isinstance(answer, dict) else {}

    async def _send(self, client: Client, data: bytes) -> bool:
        """Deliver one message byte-exact: text when it is UTF-8, binary otherwise."""
        message: Message
        try:
            message = {"type": "websocket.send", "text": data.decode("utf-8")}
        except UnicodeDecodeError:
            message = {"type": "websocket.send", "bytes": data}
        async with client.send_lock:
            if client.closing:
                return False
            try:
                await client.websocket.send(message)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return False
        return True

    async def _close(self, client: Client, code: int, reason: str) -> None:
        if client.closing:
            return
        client.closing = True
        client.close_code, client.close_reason = code, reason
        # The receive loop sees the close and sends $disconnect.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await client.websocket.close(code, reason)

    # --- the @connections management API ----------------------------------------------

    async def _post(self, connection_id: str, receive: Receive, send: Send, scope: Scope) -> None:
        """`POST @connections/{id}` in plain ASGI, answering as `_manage` does."""
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        client = self._clients.get(connection_id)
        if len(body) > MAX_MESSAGE_BYTES:
            answer = _error(413, "PayloadTooLargeException", "Message too long")
        elif client is None or client.closing or not await self._send(client, body):
            answer = _error(410, "GoneException", f"Connection {connection_id} is gone")
        else:
            await send(_EMPTY_200)
            await send({"type": "http.response.body", "body": b""})
            return
        await answer(scope, receive, send)

    async def _manage(self, request: Request) -> Response:
        """GetConnection and DeleteConnection (PostToConnection is `_post`)."""
        connection_id = request.path_params["connection_id"]
        client = self._clients.get(connection_id)
        if client is None or client.closing:
            return _error(410, "GoneException", f"Connection {connection_id} is gone")
        if request.method == "DELETE":
            await self._close(client, 1000, "Connection closed by the @connections API")
            return Response(status_code=204)
        return self._describe(client)

    def _describe(self, client: Client) -> Response:
        identity: dict[str, Any] = {"sourceIp": client.source_ip}
        if client.user_agent:
            identity["userAgent"] = client.user_agent
        return JSONResponse(
            {
                "connectedAt": _iso(client.connected_at),
                "identity": identity,
                "lastActiveAt": _iso(client.last_active_at),
            }
        )


# What Starlette's `Response(status_code=200)` sends, built once.
_EMPTY_200: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", b"0")],
}


def _posted_connection(path: str) -> str | None:
    """The id in `/@connections/{id}` or `/{stage}/@connections/{id}`, as the routes match."""
    parts = path.split("/")
    if len(parts) == 3 and parts[1] == "@connections" and parts[2]:
        return parts[2]
    if len(parts) == 4 and parts[1] and parts[2] == "@connections" and parts[3]:
        return parts[3]
    return None


def _error(status: int, code: str, message: str) -> Response:
    """An error botocore's rest-json parser maps to `client.exceptions.<code>`."""
    return JSONResponse(
        {"message": message}, status_code=status, headers={"x-amzn-ErrorType": code}
    )


# "Length, in characters, of the URL for a WebSocket API": 4096, not adjustable.
MAX_URL_CHARS = 4096


def _connect_url(scope: Mapping[str, Any]) -> str:
    """The URL a client connected with, as API Gateway counts it (scheme, host, path,
    query string)."""
    host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    path = scope.get("raw_path", b"").decode("latin-1") or scope.get("path", "/")
    return f"{scope.get('scheme', 'ws')}://{host}{path}" + (f"?{query}" if query else "")
