"""The gateway emulator refuses what API Gateway refuses from a client, and nothing else.

API Gateway closes a connection with 1009 on an incoming frame over 32 KB or a message over
128 KB, and with 1003 on a binary frame; `$disconnect` follows as after any close. A browser
sends each message as one frame, so for a page 32 KB is the most a message may be. The first
tests watch the events the emulator makes (a recording handler); the last ones use the real
local stack: the refused connection's memberships are gone, and the other subscribers of its
channel get their stream whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from devstack.gateway import GatewayEmulator
from tests.conftest import Stack
from tests.delivery import assert_complete
from tests.wsclient import Subscriber

from .test_gateway import TIMEOUT, Recorder, eventually, open_client, running

FRAME = 32 * 1024
MESSAGE = 128 * 1024


def ping_of(size: int, ping_id: str = "edge") -> str:
    """A `ping` of exactly `size` bytes (padded with a field the handler ignores)."""
    bare = json.dumps({"action": "ping", "id": ping_id, "pad": ""})
    return json.dumps({"action": "ping", "id": ping_id, "pad": "x" * (size - len(bare))})


def pieces(text: str, *sizes: int) -> list[str]:
    """`text` cut into frames of `sizes` bytes (ASCII), the rest in a last frame."""
    frames, start = [], 0
    for size in sizes:
        frames.append(text[start : start + size])
        start += size
    return [*frames, text[start:]] if start < len(text) else frames


async def closed_with(ws: ClientConnection) -> int:
    """The close code the emulator sent (waiting for the close)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert closed.value.rcvd is not None, "the connection dropped without a close frame"
    return closed.value.rcvd.code


def disconnect_of(recorder: Recorder) -> dict[str, Any]:
    [event] = recorder.of("$disconnect")
    context: dict[str, Any] = event["requestContext"]
    return context


# --- the emulator's events --------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_a_32_kb_frame_reaches_default_and_one_byte_more_closes_1009(
    monkeypatch: pytest.MonkeyPatch, compression: str | None
) -> None:
    """Measured on the message's bytes, compressed on the wire or not."""
    recorder = Recorder()
    async with (
        running(GatewayEmulator(recorder), monkeypatch) as gw,
        open_client(gw, "t", compression=compression) as ws,
    ):
        await asyncio.wait_for(ws.send("é" * (FRAME // 2)), TIMEOUT)
        await eventually(lambda: len(recorder.of("$default")) == 1)
        await asyncio.wait_for(ws.send("x" * (FRAME + 1)), TIMEOUT)
        assert await closed_with(ws) == 1009
        await eventually(lambda: len(recorder.of("$disconnect")) == 1)
    assert [e["body"] for e in recorder.of("$default")] == ["é" * (FRAME // 2)]
    gone = disconnect_of(recorder)
    assert gone["disconnectStatusCode"] == 1009
    assert "exceeds limit of 32768 bytes" in gone["disconnectReason"]


async def test_a_fragmented_message_of_128_kb_in_32_kb_frames_is_one_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that fragments may send up to 128 KB, in frames of 32 KB at most. (Without
    permessage-deflate: with it, the parser counts a compressed tail frame against a budget
    the message already used up, so exactly 128 KB in fragments is refused; docs/architecture.md
    decision 10.)"""
    recorder = Recorder()
    whole = "y" * MESSAGE
    async with (
        running(GatewayEmulator(recorder), monkeypatch) as gw,
        open_client(gw, "t", compression=None) as ws,
    ):
        await asyncio.wait_for(ws.send(pieces(whole, FRAME, FRAME, FRAME)), TIMEOUT)
        await eventually(lambda: len(recorder.of("$default")) == 1)
    assert recorder.of("$default")[0]["body"] == whole
    assert disconnect_of(recorder)["disconnectStatusCode"] == 1000


@pytest.mark.parametrize(
    "frames",
    [
        pieces("y" * (MESSAGE + 1), FRAME, FRAME, FRAME, FRAME),  # a last frame of 1 byte
        pieces("y" * 40_000, 1_000),  # a second frame of 39,000 bytes
    ],
    ids=["message-over-128-kb", "fragment-over-32-kb"],
)
async def test_a_fragmented_message_over_a_limit_closes_1009_before_default(
    monkeypatch: pytest.MonkeyPatch, frames: list[str]
) -> None:
    recorder = Recorder()
    async with (
        running(GatewayEmulator(recorder), monkeypatch) as gw,
        open_client(gw, "t", compression=None) as ws,
    ):
        with pytest.raises(ConnectionClosed):  # the close may come while still sending
            await asyncio.wait_for(ws.send(frames), TIMEOUT)
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1009
        await eventually(lambda: len(recorder.of("$disconnect")) == 1)
    assert recorder.of("$default") == []
    gone = disconnect_of(recorder)
    assert gone["disconnectStatusCode"] == 1009
    assert "exceeds limit" in gone["disconnectReason"]  # the gateway closed, not the client


async def test_a_binary_frame_closes_1003_before_default(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    async with (
        running(GatewayEmulator(recorder), monkeypatch) as gw,
        open_client(gw, "t") as ws,
    ):
        await asyncio.wait_for(ws.send('{"action":"ping"}'), TIMEOUT)
        await asyncio.wait_for(ws.send(b"\x00\x01"), TIMEOUT)
        with contextlib.suppress(ConnectionClosed):  # the close may have come already
            await asyncio.wait_for(ws.send('{"action":"after"}'), TIMEOUT)
        assert await closed_with(ws) == 1003
        await eventually(lambda: len(recorder.of("$disconnect")) == 1)
    assert [e["body"] for e in recorder.of("$default")] == ['{"action":"ping"}']
    gone = disconnect_of(recorder)
    assert (gone["disconnectStatusCode"], gone["disconnectReason"]) == (
        1003,
        "Binary frames are not supported",
    )


async def test_served_without_the_frame_limits_it_refuses_every_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a plain WebSocket protocol the limits would not hold: no client gets in."""
    recorder = Recorder()
    async with running(GatewayEmulator(recorder), monkeypatch, ws="websockets-sansio") as gw:
        with pytest.raises(InvalidStatus) as refused:
            async with open_client(gw, "t"):
                pass
    assert refused.value.response.status_code == 500
    assert recorder.events == []


async def test_the_disconnect_threads_end_with_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = GatewayEmulator(Recorder())
    prefix = f"disconnect-{emulator.api_id}"

    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith(prefix)]

    async with running(emulator, monkeypatch) as gw:
        async with open_client(gw, "t"):
            pass
        await eventually(lambda: len(threads()) > 0)
    await eventually(lambda: threads() == [])


# --- the real stack: the refused connection leaves, its channel carries on ---------------------


def memberships(stack: Stack, connection_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.dynamodb_client().query(
        TableName=stack.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"CONN#{connection_id}"}},
    )["Items"]
    return items


async def stream_on(stack: Stack, channel: str, text: str) -> str:
    body = {
        "channels": [channel],
        "actionName": "onLimits",
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "limits"}],
            "providerArgs": {"text": text, "chunks": 30, "delayMs": 20},
        },
    }
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.post("/llm/query", json=body, headers={"x-api-key": stack.api_key})
    assert r.status_code == 200, r.text
    return str(r.json()["streamId"])


async def test_a_message_of_exactly_32_kb_is_answered(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("limits-a"))
    try:
        await sub.ws.send(ping_of(FRAME, "one-frame"))
        await sub.wait_for(lambda m: m.get("type") == "pong" and m.get("id") == "one-frame")
        await sub.send({"action": "ping", "id": "still-open"})
        await sub.wait_for(lambda m: m.get("type") == "pong" and m.get("id") == "still-open")
    finally:
        await sub.close()


@pytest.mark.parametrize(
    ("bad", "code"),
    [(ping_of(FRAME + 1, "over"), 1009), (b'{"action":"ping"}', 1003)],
    ids=["over-32-kb", "binary"],
)
async def test_a_refused_frame_closes_only_its_connection_mid_stream(
    stack: Stack, bad: str | bytes, code: int
) -> None:
    channel = f"limits-{code}"
    subs = [await Subscriber.open(stack.ws, stack.token(channel)) for _ in range(3)]
    refused, others = subs[0], subs[1:]
    try:
        cid = await refused.connection_id()
        assert memberships(stack, cid) != []
        text = " ".join(f"word{n}" for n in range(60))
        stream_id = await stream_on(stack, channel, text)
        await refused.wait_for(lambda m: m.get("streamId") == stream_id and m["type"] == "delta")
        await refused.ws.send(bad)
        await asyncio.wait_for(refused.ws.wait_closed(), TIMEOUT)
        assert refused.ws.close_code == code
        for sub in others:
            assert_complete(await sub.stream(stream_id), text)
        await eventually(lambda: memberships(stack, cid) == [])
    finally:
        for sub in subs:
            await sub.close()


@pytest.mark.parametrize(
    ("line", "status"),
    [("GET /?token={long} HTTP/1.1", b"414"), ("GET /?token=x HTTP/1.1\r\nX-Big: {long}", b"431")],
    ids=["request-line", "header-line"],
)
async def test_an_upgrade_request_with_a_line_over_8_kb_is_refused_and_closed(
    stack: Stack, line: str, status: bytes
) -> None:
    """A token for 100 long channels is over 8 KB: the emulator's parser refused such a
    request, and the client then waited for an answer that never came."""
    host, port = stack.ws.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        request = line.format(long="x" * 9_000) + (
            f"\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        writer.write(request.encode())
        answer = await asyncio.wait_for(reader.read(), TIMEOUT)  # to the close
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]


async def test_a_connect_url_over_4096_characters_is_refused_and_subscribe_joins_the_rest(
    stack: Stack,
) -> None:
    """API Gateway takes a WebSocket URL of at most 4,096 characters, token included: a
    token for 30 channels of 100 characters does not fit. The emulator refuses it as AWS
    would (a test cannot pass here with a connect that fails there), and the way the docs
    give works: connect with one channel, then `subscribe` with the long token."""
    channels = [f"url-limit-{i:02d}-" + "c" * 86 for i in range(30)]
    long_token = stack.token(*channels)
    with pytest.raises(InvalidStatus) as refused:
        await Subscriber.open(stack.ws, long_token)
    assert refused.value.response.status_code == 414
    sub = await Subscriber.open(stack.ws, stack.token(channels[0]))
    try:
        for channel in channels[1:]:
            await sub.send({"action": "subscribe", "channel": channel, "token": long_token})
        for channel in channels[1:]:
            await sub.wait_for(lambda m, c=channel: m == {"type": "subscribed", "channel": c})
    finally:
        await sub.close()
