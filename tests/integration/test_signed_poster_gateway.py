"""SignedPoster against the gateway emulator: delivery byte-exact, then 410 after close, 413."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from streaming_proxy.channels.signed_poster import SignedPoster
from streaming_proxy.channels.sigv4 import Credentials
from streaming_proxy.errors import ConnectionGone, DeliveryRejected
from tests.integration import test_gateway as gateway_tests
from tests.integration.test_gateway import (
    TIMEOUT,
    Gateway,
    connection_id_of,
    eventually,
    open_client,
    token,
)

# The emulator, its DynamoDB and environment, exactly as test_gateway.py builds them.
moto_endpoint = gateway_tests.moto_endpoint
env = gateway_tests.env
gateway = gateway_tests.gateway

CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


@pytest.fixture
async def poster(gateway: Gateway) -> AsyncIterator[SignedPoster]:
    signed = SignedPoster(
        f"http://127.0.0.1:{gateway.port}/dev", "us-east-1", credentials=lambda: CREDENTIALS
    )
    try:
        yield signed
    finally:
        await signed.aclose()


async def test_posts_arrive_byte_exact_then_gone_after_close(
    gateway: Gateway, poster: SignedPoster
) -> None:
    async with open_client(gateway, token("room")) as ws:
        cid = await connection_id_of(ws)
        assert "=" in cid  # the id needs percent-encoding in the path
        text = '{"type":"delta","content":"héllo wörld — 你好 👋 \\"q\\""}'
        await poster.post(cid, text.encode())
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == text
        binary = b"\xff\x00\xfe not utf-8"
        await poster.post(cid, binary)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == binary
    await eventually(lambda: gateway.emulator.connection_ids() == [])
    with pytest.raises(ConnectionGone) as gone:
        await poster.post(cid, b"late")
    assert gone.value.status == 410


async def test_post_over_128_kb_is_rejected_with_413(
    gateway: Gateway, poster: SignedPoster
) -> None:
    async with open_client(gateway, token("room")) as ws:
        cid = await connection_id_of(ws)
        with pytest.raises(DeliveryRejected) as refused:
            await poster.post(cid, b"x" * 131_073)
        assert refused.value.status == 413
        exactly = "é" * 65_536  # 131072 bytes: the limit itself is allowed
        await poster.post(cid, exactly.encode())
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == exactly
