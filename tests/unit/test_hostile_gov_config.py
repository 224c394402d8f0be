"""Hostile cases of the governance and analytics settings and of the day's quota window:
a price that is not a finite number of USD, a misspelled governance field, and the quota's
`Retry-After` read across midnight UTC."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from streaming_proxy.config import AppConfig, Settings
from streaming_proxy.emf import stream_record
from streaming_proxy.errors import QuotaExceeded
from streaming_proxy.limits import DAY, LimitStore
from streaming_proxy.observability import StreamStats
from streaming_proxy.prices import ModelPrice
from tests.unit.conftest import MOTO_TABLE

APP = {"keySha256": "0" * 64, "tokenSecret": "s" * 32}


@pytest.mark.parametrize("price", ["Infinity", "1e999", "1e308"])
def test_a_price_whose_cost_is_not_a_finite_number_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, price: str
) -> None:
    """An infinite (or overflowing) price would make every priced stream's EMF record and
    log line hold `Infinity`, which is not JSON: CloudWatch drops the whole record, its
    StreamErrors and PostFailures with it."""
    entry = '{"input": ' + price + ', "output": 1}'  # as written: json.dumps spells no 1e999
    monkeypatch.setenv("PRICES", '{"openai": {"gpt-4o-mini": ' + entry + "}}")
    with pytest.raises(ValidationError, match="input"):
        Settings()


def test_the_dearest_price_allowed_still_gives_a_finite_json_cost() -> None:
    top = ModelPrice(input=1_000_000, output=1_000_000)
    stats = StreamStats(provider="openai", kind="llm", price=top, prompt_tokens=10**9)
    stats.output_tokens = 10**9
    json.loads(json.dumps(stream_record(stats)), parse_constant=pytest.fail)
    assert stats.cost_usd == 2 * 10**9


@pytest.mark.parametrize(
    "typo",
    [{"ratelimit": 5}, {"tokenquota": 100}, {"allowClientProviderKeys": False}, {"model": {}}],
)
def test_a_misspelled_governance_field_fails_the_app_entry(typo: dict[str, Any]) -> None:
    """A governance field the entry does not know would be ignored: the app would run
    without the limit its operator set (fail open). The function refuses to start."""
    with pytest.raises(ValidationError, match=next(iter(typo))):
        AppConfig.model_validate({**APP, **typo})


def test_both_spellings_of_a_known_field_still_validate() -> None:
    snake = AppConfig.model_validate({**APP, "rate_limit": 5, "allow_client_provider_key": False})
    assert (snake.rate_limit, snake.allow_client_provider_key) == (5, False)


class Ticking:
    """A clock that moves on by `step` seconds each time it is read."""

    def __init__(self, now: float, step: float) -> None:
        self.now, self.step = now, step

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        return now


def test_the_quota_retry_after_is_for_the_day_it_counted_even_at_midnight(
    aws_env: None,
) -> None:
    """The day's tokens are read a moment before midnight UTC and the refusal built a
    moment after: Retry-After runs to the end of the day that was counted (1 s), never a
    whole day more."""
    midnight = 1_795_305_600  # 2026-11-22 00:00:00 UTC
    assert midnight % DAY == 0
    client = boto3.client("dynamodb", region_name="us-east-1")
    LimitStore(client, MOTO_TABLE, lambda: midnight - 10).add_tokens("a", 500)
    limits = LimitStore(client, MOTO_TABLE, Ticking(midnight - 0.0004, 0.001))
    with pytest.raises(QuotaExceeded) as raised:
        limits.check_quota("a", 100)
    assert raised.value.headers() == {"Retry-After": "1"}


def test_two_apps_sharing_one_key_refuse_to_start() -> None:
    """One key for two apps authenticated every request of both as the last of them: one
    app's backend read, stopped and spent as the other. The function refuses to start."""
    apps = {"a": {**APP, "rateLimit": 5}, "b": APP, "c": {**APP, "keySha256": "1" * 64}}
    with pytest.raises(ValidationError, match=r"apps \['a', 'b'\] share one key"):
        Settings(apps=apps)
