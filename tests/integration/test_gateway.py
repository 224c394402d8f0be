"""The gateway emulator with real clients: websockets, boto3's management API, moto's server.

How a client learns its connection id: the `pong` reply carries `connectionId` (the
connections handler adds it); tests also cross-check with `GatewayEmulator.connection_ids()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import boto3
import pytest
import uvicorn
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from devstack.dynamodb import start_dynamodb
from devstack.gateway import GatewayEmulator, GatewayProtocol
from devstack.process import free_port
from devstack.settings import DevSettings
from devstack.stack import load_function_module
from streaming_proxy import aws
from streaming_proxy.auth import AppRegistry, key_digest
from streaming_proxy.config import get_settings
from streaming_proxy.service import StreamService

TABLE = "streaming-proxy-gateway-test"
SECRET = "gateway-test-token-secret-012345"
APPS = {"app1": {"keySha256": "0" * 64, "tokenSecret": SECRET}}
TIMEOUT = 5.0


CONNECTIONS = load_function_module("connections")


# --- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """The local stack's DynamoDB (moto, one request at a time) with its table."""
    dev = DevSettings(host="127.0.0.1", dynamodb_port=free_port(), table_name=TABLE)
    server = start_dynamodb(dev)
    try:
        yield f"http://{dev.host}:{dev.dynamodb_port}"
    finally:
        server.stop()


@dataclass
class Gateway:
    emulator: GatewayEmulator
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def management(self, stage: str | None = "dev") -> Any:
        suffix = f"/{stage}" if stage else ""
        return boto3.client(
            "apigatewaymanagementapi",
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{self.port}{suffix}",
        )


def clear_caches() -> None:
    get_settings.cache_clear()
    aws.dynamodb.cache_clear()
    aws.management_api.cache_clear()
    CONNECTIONS.default_routes.cache_clear()


@pytest.fixture
def env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "TABLE_NAME": TABLE,
        "DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "APPS": json.dumps(APPS),
        "ALLOWED_ORIGINS": "*",
    }.items():
        monkeypatch.setenv(name, value)
    clear_caches()
    yield
    clear_caches()


@contextlib.asynccontextmanager
async def running(
    emulator: GatewayEmulator,
    monkeypatch: pytest.MonkeyPatch,
    ws: type[asyncio.Protocol] | str = GatewayProtocol,
) -> AsyncIterator[Gateway]:
    """Serve the emulator with uvicorn on a free loopback port, as the stack does (its
    WebSocket protocol enforcing API Gateway's frame limits); stop it afterwards."""
    config = uvicorn.Config(emulator.app, host="127.0.0.1", port=0, ws=ws, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(TIMEOUT):
            while not server.started:  # noqa: ASYNC110 -- uvicorn offers no startup event
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        # The handler reads its settings on first use, after the port is known.
        monkeypatch.setenv("WS_MANAGEMENT_ENDPOINT", f"http://127.0.0.1:{port}/dev")
        clear_caches()
        yield Gateway(emulator, port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)


@pytest.fixture
async def gateway(env: None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    async with running(GatewayEmulator(CONNECTIONS.handler), monkeypatch) as gw:
        yield gw


# --- helpers ----------------------------------------------------------------------------------


def token(*channels: str, ttl: int = 600, now: float | None = None) -> str:
    registry = AppRegistry.from_settings(get_settings())
    app = registry.get("app1")
    assert app
    return registry.mint_token(app, channels, ttl, now=now)[0]


def rows_of(connection_id: str) -> list[tuple[str, str]]:
    db = aws.dynamodb("us-east-1", get_settings().dynamodb_endpoint_url)
    items = db.scan(TableName=TABLE)["Items"]
    keys = [(item["pk"]["S"], item["sk"]["S"]) for item in items]
    return sorted(key for key in keys if connection_id in key[0] or connection_id in key[1])


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return data


async def ask(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await asyncio.wait_for(ws.send(json.dumps(message)), TIMEOUT)
    return await receive_json(ws)


async def connection_id_of(ws: ClientConnection) -> str:
    pong = await ask(ws, {"action": "ping", "id": 1})
    assert pong["type"] == "pong" and pong["id"] == 1
    connection_id: str = pong["connectionId"]
    return connection_id


async def eventually(check: Callable[[], bool], within: float = TIMEOUT) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def open_client(gw: Gateway, tok: str, **kwargs: Any) -> Any:
    return connect(
        f"{gw.ws_url}?token={quote(tok, safe='')}",
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        **kwargs,
    )


# --- acceptance -------------------------------------------------------------------------------


async def test_post_to_connection_arrives_byte_exact_then_gone_after_close(
    gateway: Gateway,
) -> None:
    client = gateway.management()
    async with open_client(gateway, token("room")) as ws:
        cid = await connection_id_of(ws)
        assert gateway.emulator.connection_ids() == [cid]
        assert rows_of(cid) != []
        text = '{"type":"delta","content":"héllo wörld — 你好 👋 \\"q\\""}'
        await asyncio.to_thread(client.post_to_connection, ConnectionId=cid, Data=text.encode())
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == text
        binary = b"\xff\x00\xfe not utf-8"
        await asyncio.to_thread(client.post_to_connection, ConnectionId=cid, Data=binary)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == binary
        # The stage-less endpoint is served too.
        bare = gateway.management(stage=None)
        await asyncio.to_thread(bare.post_to_connection, ConnectionId=cid, Data=b"plain")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "plain"
    await eventually(lambda: rows_of(cid) == [])
    assert gateway.emulator.connection_ids() == []
    with pytest.raises(client.exceptions.GoneException):
        await asyncio.to_thread(client.post_to_connection, ConnectionId=cid, Data=b"late")
    with pytest.raises(client.exceptions.GoneException):
        await asyncio.to_thread(
            client.post_to_connection, ConnectionId="Unknown0000000=", Data=b"x"
        )


async def test_get_connection_describes_a_live_connection(gateway: Gateway) -> None:
    client = gateway.management()
    async with open_client(gateway, token("room"), user_agent_header="test-agent/1.0") as ws:
        cid = await connection_id_of(ws)
        info = await asyncio.to_thread(client.get_connection, ConnectionId=cid)
    assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "test-agent/1.0"}
    assert abs(info["ConnectedAt"].timestamp() - time.time()) < 60
    assert info["LastActiveAt"] >= info["ConnectedAt"]


async def test_token_for_one_channel_cannot_join_another(gateway: Gateway) -> None:
    async with open_client(gateway, token("channel-a")) as ws:
        cid = await connection_id_of(ws)
        refused = await ask(
            ws, {"action": "subscribe", "channel": "channel-b", "token": token("channel-a")}
        )
        assert refused["type"] == "error" and refused["error"]["type"] == "forbidden"
        assert ("CHANNEL#app1#channel-b", "CONN#" + cid) not in rows_of(cid)
        joined = await ask(
            ws, {"action": "subscribe", "channel": "channel-b", "token": token("channel-b")}
        )
        assert joined == {"type": "subscribed", "channel": "channel-b"}
        assert ("CHANNEL#app1#channel-b", "CONN#" + cid) in rows_of(cid)


@pytest.mark.parametrize("kind", ["expired", "tampered", "missing"])
async def test_bad_tokens_are_refused_at_handshake(gateway: Gateway, kind: str) -> None:
    good = token("room")
    bad = {
        "expired": token("room", ttl=60, now=time.time() - 3600),
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "missing": "",
    }[kind]
    with pytest.raises(InvalidStatus) as refused:
        async with open_client(gateway, bad):
            pass
    expected = 403 if kind == "tampered" else 401
    assert refused.value.response.status_code == expected
    body = json.loads(refused.value.response.body or b"{}")
    assert body["error"]["type"] == ("forbidden" if expected == 403 else "unauthorized")
    assert gateway.emulator.connection_ids() == []


async def test_disconnect_leaves_no_rows(gateway: Gateway) -> None:
    async with open_client(gateway, token("a", "b")) as ws:
        cid = await connection_id_of(ws)
        await ask(ws, {"action": "subscribe", "channel": "c", "token": token("c")})
        assert len(rows_of(cid)) == 1 + 2 * 4  # META + both directions of a, b, c, tab|<id>
    await eventually(lambda: rows_of(cid) == [])


async def test_ping_pong_through_the_emulator(gateway: Gateway) -> None:
    async with open_client(gateway, token("room")) as ws:
        pong = await ask(ws, {"action": "ping", "id": "abc"})
        assert pong == {
            "type": "pong",
            "id": "abc",
            "connectionId": gateway.emulator.connection_ids()[0],
        }
        error = await ask(ws, {"action": "nope"})
        assert error["type"] == "error"
        assert (await ask(ws, {"action": "ping"}))["type"] == "pong"


async def test_post_over_128_kb_is_413(gateway: Gateway) -> None:
    client = gateway.management()
    async with open_client(gateway, token("room")) as ws:
        cid = await connection_id_of(ws)
        with pytest.raises(client.exceptions.PayloadTooLargeException):
            await asyncio.to_thread(
                client.post_to_connection, ConnectionId=cid, Data=b"x" * 131_073
            )
        exactly = "é" * 65_536  # 131072 bytes: the limit itself is allowed
        await asyncio.to_thread(client.post_to_connection, ConnectionId=cid, Data=exactly.encode())
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == exactly


async def test_client_message_over_32_kb_closes_the_connection(gateway: Gateway) -> None:
    """A browser's message is one frame, and API Gateway's frames are 32 KB at most
    (tests/integration/test_gateway_limits.py has the edges and fragmented messages)."""
    async with open_client(gateway, token("room")) as ws:
        cid = await connection_id_of(ws)
        await asyncio.wait_for(ws.send("x" * 32_769), TIMEOUT)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await eventually(lambda: rows_of(cid) == [])


async def test_delete_connection_closes_the_client(gateway: Gateway) -> None:
    client = gateway.management()
    async with open_client(gateway, token("room")) as ws:
        cid = await connection_id_of(ws)
        await asyncio.to_thread(client.delete_connection, ConnectionId=cid)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    await eventually(lambda: rows_of(cid) == [])
    with pytest.raises(client.exceptions.GoneException):
        await asyncio.to_thread(client.delete_connection, ConnectionId=cid)


async def test_idle_connections_are_closed_but_messages_keep_them_open(
    env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = GatewayEmulator(CONNECTIONS.handler, idle_timeout_seconds=0.6)
    async with running(emulator, monkeypatch) as gw, open_client(gw, token("room")) as ws:
        cid = await connection_id_of(ws)
        for _ in range(8):  # 1.2 s of activity, twice the idle timeout
            await asyncio.sleep(0.15)
            assert (await ask(ws, {"action": "ping"}))["type"] == "pong"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await eventually(lambda: rows_of(cid) == [])


async def test_connections_older_than_max_age_are_closed(
    env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough for a slow machine's first round trip, short enough to wait for.
    emulator = GatewayEmulator(CONNECTIONS.handler, max_age_seconds=2.0)
    async with running(emulator, monkeypatch) as gw, open_client(gw, token("room")) as ws:
        cid = await connection_id_of(ws)
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # activity does not extend the maximum age
                await asyncio.wait_for(ws.send(json.dumps({"action": "ping"})), TIMEOUT)
                await asyncio.wait_for(ws.recv(), TIMEOUT)
                await asyncio.sleep(0.05)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await eventually(lambda: rows_of(cid) == [])


# --- the events the emulator builds -----------------------------------------------------------


class Recorder:
    """A handler that records its events; refuses `$connect` when the token is 'refuse'."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        self.contexts.append(context)
        query = event.get("queryStringParameters") or {}
        if query.get("token") == "refuse":
            return {"statusCode": 418, "body": '{"why":"teapot"}'}
        return {"statusCode": 200}

    def of(self, route: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["requestContext"]["routeKey"] == route]


async def test_emulator_events_match_powertools_models(
    env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    async with running(GatewayEmulator(recorder, stage="prod"), monkeypatch) as gw:
        async with open_client(gw, "tok en/1", origin="https://app.example.com") as ws:
            await asyncio.wait_for(ws.send('{"action":"ping"}'), TIMEOUT)
            await eventually(lambda: len(recorder.of("$default")) == 1)
        await eventually(lambda: len(recorder.of("$disconnect")) == 1)
    connect_event = APIGatewayWebSocketConnectEventModel.model_validate(recorder.of("$connect")[0])
    assert connect_event.headers["Origin"] == "https://app.example.com"
    assert recorder.of("$connect")[0]["queryStringParameters"] == {"token": "tok en/1"}
    assert connect_event.request_context.stage == "prod"
    cid = connect_event.request_context.connection_id
    assert len(cid) == 16 and cid.endswith("=")
    text = APIGatewayWebSocketMessageEventModel.model_validate(recorder.of("$default")[0])
    assert (text.body, text.is_base64_encoded) == ('{"action":"ping"}', False)
    assert text.request_context.message_id
    gone = APIGatewayWebSocketDisconnectEventModel.model_validate(recorder.of("$disconnect")[0])
    assert gone.request_context.disconnect_status_code == 1000
    assert recorder.of("$disconnect")[0]["requestContext"]["disconnectReason"] == (
        "Client-side close frame status set to 1000"
    )
    assert {text.request_context.connection_id, gone.request_context.connection_id} == {cid}
    assert all(c.get_remaining_time_in_millis() > 0 and c.aws_request_id for c in recorder.contexts)


async def test_refused_connect_answers_with_handlers_status_and_body(
    env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    async with running(GatewayEmulator(recorder), monkeypatch) as gw:
        with pytest.raises(InvalidStatus) as refused:
            async with open_client(gw, "refuse"):
                pass
        assert refused.value.response.status_code == 418
        assert refused.value.response.body == b'{"why":"teapot"}'
        assert gw.emulator.connection_ids() == []
    assert recorder.of("$disconnect") == []


async def test_close_all_fires_disconnect_once_per_connection(
    env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    async with (
        running(GatewayEmulator(recorder), monkeypatch) as gw,
        open_client(gw, "a") as one,
        open_client(gw, "b") as two,
    ):
        await eventually(lambda: len(gw.emulator.connection_ids()) == 2)
        await asyncio.wait_for(gw.emulator.close_all(), TIMEOUT)
        for ws in (one, two):
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert gw.emulator.connection_ids() == []
    disconnects = recorder.of("$disconnect")
    assert len(disconnects) == 2
    assert {e["requestContext"]["disconnectStatusCode"] for e in disconnects} == {1001}
    assert len({e["requestContext"]["connectionId"] for e in disconnects}) == 2


@contextlib.asynccontextmanager
async def lambda_mode_service(
    monkeypatch: pytest.MonkeyPatch, app_key: str, upstream: str, **env: str
) -> AsyncIterator[StreamService]:
    """A StreamService in DETACH_MODE=lambda (acks at once) over this module's gateway, one
    app (`app1`, `app_key`) and an OpenAI-format upstream; `env` adds settings."""
    apps = {"app1": {"keySha256": key_digest(app_key), "tokenSecret": SECRET}}
    for name, value in {
        "APPS": json.dumps(apps),
        "DETACH_MODE": "lambda",
        "SELF_FUNCTION_NAME": "stack-relay",
        "ACK_WAIT_SECONDS": "0",
        "OPENAI_BASE_URL": upstream,
        "OPENAI_API_KEY": f"fake-openai-key-for-{app_key}",
        **env,
    }.items():
        monkeypatch.setenv(name, value)
    clear_caches()
    running = StreamService(get_settings())
    try:
        yield running
    finally:
        await running.aclose()
