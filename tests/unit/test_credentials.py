"""BotocoreCredentials: botocore's chain, searched once; fixed credentials frozen once,
refreshable ones asked again at an interval, so botocore's own renewal reaches the posts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.credentials import Credentials as FixedCredentials

from streaming_proxy.channels.credentials import REREAD_SECONDS, BotocoreCredentials
from streaming_proxy.channels.signed_poster import SignedPoster
from streaming_proxy.channels.sigv4 import Credentials
from streaming_proxy.errors import DeliveryError
from tests.unit.loopback import Loopback


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Only what a test puts in the environment is found: no files, no metadata service."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CREDENTIAL_EXPIRATION",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


def set_keys(monkeypatch: pytest.MonkeyPatch, key: str, expires_in: timedelta | None) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", f"{key}-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", f"{key}-token")
    if expires_in is not None:
        expiry = datetime.now(UTC) + expires_in
        monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", expiry.isoformat())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lambda_environment_credentials_come_from_botocore_chain(
    no_aws_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_keys(monkeypatch, "ASIAENVEXAMPLE", None)
    assert BotocoreCredentials()() == Credentials(
        "ASIAENVEXAMPLE", "ASIAENVEXAMPLE-secret", "ASIAENVEXAMPLE-token"
    )


def test_no_credentials_is_a_delivery_error(no_aws_config: None) -> None:
    with pytest.raises(DeliveryError, match="no AWS credentials"):
        BotocoreCredentials()()


def test_fixed_credentials_are_frozen_once(
    no_aws_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_keys(monkeypatch, "ASIAFIXED", None)
    frozen: list[object] = []
    original = FixedCredentials.get_frozen_credentials

    def counting(self: FixedCredentials) -> object:
        frozen.append(self)
        return original(self)

    monkeypatch.setattr(FixedCredentials, "get_frozen_credentials", counting)
    clock = Clock()
    source = BotocoreCredentials(clock=clock)
    first = source()
    clock.now += 10 * REREAD_SECONDS
    assert all(source() is first for _ in range(100))
    assert len(frozen) == 1


async def test_renewed_role_credentials_reach_the_next_posts(
    no_aws_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials near expiry are renewed by botocore once asked again; posts then use them."""
    set_keys(monkeypatch, "ASIAOLD", timedelta(minutes=12))  # inside botocore's 15-min window
    clock = Clock()
    server = Loopback()
    async with server.serving() as url:
        poster = SignedPoster(url, "us-east-1", credentials=BotocoreCredentials(clock=clock))
        await poster.post("c", b"1")
        set_keys(monkeypatch, "ASIANEW", timedelta(hours=1))  # what a renewal returns
        clock.now += REREAD_SECONDS / 2
        await poster.post("c", b"2")  # the frozen copy, still fresh enough
        clock.now += REREAD_SECONDS
        await poster.post("c", b"3")
        await poster.aclose()
    sent = [dict(r.headers) for r in server.requests]
    keys = [h["authorization"].split("Credential=")[1].split("/")[0] for h in sent]
    assert keys == ["ASIAOLD", "ASIAOLD", "ASIANEW"]
    assert [h["x-amz-security-token"] for h in sent] == ["ASIAOLD-token"] * 2 + ["ASIANEW-token"]


def test_credentials_far_from_expiry_are_kept_by_botocore(
    no_aws_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_keys(monkeypatch, "ASIAVALID", timedelta(hours=1))
    clock = Clock()
    source = BotocoreCredentials(clock=clock)
    assert source().access_key == "ASIAVALID"
    set_keys(monkeypatch, "ASIAOTHER", timedelta(hours=2))
    clock.now += 2 * REREAD_SECONDS
    assert source().access_key == "ASIAVALID"  # no renewal is due: botocore keeps them
