"""POSTER: the signed poster by default, boto3's on request, each sized by POST_CONCURRENCY."""

from __future__ import annotations

import pytest

from streaming_proxy.channels.poster import BotoPoster
from streaming_proxy.channels.signed_poster import SignedPoster
from streaming_proxy.config import Settings
from streaming_proxy.service import StreamService

ENDPOINT = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/dev"


def service(monkeypatch: pytest.MonkeyPatch, **env: str) -> StreamService:
    for name, value in {"WS_MANAGEMENT_ENDPOINT": ENDPOINT, "TABLE_NAME": "t", **env}.items():
        monkeypatch.setenv(name, value)
    return StreamService(Settings())


async def test_the_signed_poster_is_the_default(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POSTER", raising=False)
    streams = service(monkeypatch, POST_CONCURRENCY="12")
    poster = streams.poster
    assert isinstance(poster, SignedPoster)
    assert poster.slots._value == 12
    await streams.aclose()


async def test_boto3_stays_an_option(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    streams = service(monkeypatch, POSTER="boto3", POST_CONCURRENCY="8")
    poster = streams.poster
    assert isinstance(poster, BotoPoster)
    assert poster.slots._value == 8
    await streams.aclose()
