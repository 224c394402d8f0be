"""Analytics per stream: the price table, the derived numbers, the EMF record's shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from streaming_proxy import redact
from streaming_proxy.config import Settings
from streaming_proxy.observability import PublishStats, StreamStats
from streaming_proxy.prices import ModelPrice, price_of

PRICES = {
    "openai": {"gpt-4o-mini": ModelPrice(input=0.15, output=0.60)},
    "fakecompat": {"*": ModelPrice(input=0, output=0)},
}


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)


def emitted(stats: StreamStats, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    stats.emit()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    record: dict[str, Any] = json.loads(lines[0])
    return record


def value(record: dict[str, Any], name: str) -> Any:
    found = record[name]
    return found[0] if isinstance(found, list) else found


def test_a_price_is_the_models_own_else_its_providers_wildcard_else_none() -> None:
    assert price_of(PRICES, "openai", "gpt-4o-mini") == ModelPrice(input=0.15, output=0.6)
    assert price_of(PRICES, "openai", "gpt-4o") is None
    assert price_of(PRICES, "openai", None) is None
    assert price_of(PRICES, "fakecompat", "llama3") == ModelPrice(input=0, output=0)
    assert price_of(PRICES, "anthropic", "claude-sonnet-4-5") is None
    assert price_of({}, "openai", "gpt-4o-mini") is None


def test_cost_is_usd_per_million_tokens() -> None:
    price = ModelPrice(input=0.15, output=0.60)
    assert price.cost(1_000_000, 0) == pytest.approx(0.15)
    assert price.cost(1200, 800) == pytest.approx((1200 * 0.15 + 800 * 0.60) / 1e6)
    assert ModelPrice(input=0, output=0).cost(5000, 5000) == 0.0


def test_prices_setting_is_json_per_provider_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {"openai": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}}
    monkeypatch.setenv("PRICES", json.dumps(table))
    assert Settings().prices == {"openai": {"gpt-4o-mini": ModelPrice(input=0.15, output=0.6)}}
    monkeypatch.delenv("PRICES")
    assert Settings().prices == {}


@pytest.mark.parametrize(
    "entry",
    [{"input": -1, "output": 0.6}, {"input": 0.15}, {"input": 0.15, "outputs": 0.6}],
)
def test_a_malformed_price_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, entry: dict[str, Any]
) -> None:
    monkeypatch.setenv("PRICES", json.dumps({"openai": {"gpt-4o-mini": entry}}))
    with pytest.raises(ValidationError):
        Settings()


def test_an_unpriced_model_has_no_cost_never_zero() -> None:
    stats = StreamStats(provider="anthropic", kind="llm", prompt_tokens=10, output_tokens=20)
    assert stats.cost_usd is None
    priced = StreamStats(
        provider="openai", kind="openai", price=ModelPrice(input=1, output=2), output_tokens=20
    )
    priced.prompt_tokens = 10
    assert priced.cost_usd == pytest.approx((10 * 1 + 20 * 2) / 1e6)


def test_output_tokens_per_second_is_completion_tokens_over_generation_time() -> None:
    stats = StreamStats(provider="mock", kind="llm", output_tokens=50, generation_ms=2000.0)
    assert stats.output_tokens_per_second == 25.0
    never_answered = StreamStats(provider="mock", kind="llm", output_tokens=5)
    assert never_answered.output_tokens_per_second is None
    for instant in (0.0, 0.9):  # one read held the whole answer
        stats = StreamStats(provider="mock", kind="llm", output_tokens=5, generation_ms=instant)
        assert stats.output_tokens_per_second is None


def test_status_says_done_failed_or_cancelled() -> None:
    assert StreamStats(provider="mock", kind="llm").status == "done"
    assert StreamStats(provider="mock", kind="llm", finish_reason="cancelled").status == "cancelled"
    failed = StreamStats(provider="mock", kind="llm", finish_reason="error", error="upstream_error")
    assert failed.status == "failed"


def test_emf_record_is_by_app_and_provider_with_a_service_wide_aggregate(
    metrics_on: None, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = StreamStats(
        provider="openai",
        kind="openai",
        stream_id="s-1",
        app_id="dev",
        model="gpt-4o-mini",
        channels=["room", "side"],
        price=ModelPrice(input=0.15, output=0.60),
        prompt_tokens=1000,
        output_tokens=500,
        generation_ms=2500.0,
        finish_reason="error",
        error="upstream_error",
        publish=PublishStats(subscribers=2, failed=1, dropped=3),
    )
    record = emitted(stats, capsys)
    by_app, aggregate = record["_aws"]["CloudWatchMetrics"]
    assert by_app["Namespace"] == aggregate["Namespace"] == "StreamingProxy"
    assert by_app["Dimensions"] == [["app", "provider", "service"]]
    assert (record["app"], record["provider"], record["service"]) == (
        "dev",
        "openai",
        "streaming-proxy",
    )
    assert aggregate["Dimensions"] == [["service"]]
    assert [m["Name"] for m in aggregate["Metrics"]] == [
        "PostFailures",
        "MessagesDropped",
        "StreamErrors",
        "RecordFailures",
    ]
    assert all(m["Unit"] == "Count" for m in aggregate["Metrics"])
    assert (value(record, "PostFailures"), value(record, "MessagesDropped")) == (1, 3)
    assert value(record, "StreamErrors") == 1
    assert value(record, "EstimatedCost") == pytest.approx((1000 * 0.15 + 500 * 0.6) / 1e6)
    assert value(record, "OutputTokensPerSecond") == 200.0
    assert (value(record, "PromptTokens"), value(record, "TotalTokens")) == (1000, 1500)
    assert value(record, "Channels") == 2
    # Properties, not dimensions: the model, and what is per stream.
    assert record["model"] == "gpt-4o-mini" and record["stream_id"] == "s-1"
    assert (record["status"], record["error"], record["tokens_estimated"]) == (
        "failed",
        "upstream_error",
        False,
    )
    assert "room" not in json.dumps(record)  # channel names are app data: log line only


def test_emf_leaves_out_what_a_stream_did_not_have(
    metrics_on: None, capsys: pytest.CaptureFixture[str]
) -> None:
    record = emitted(StreamStats(provider="anthropic", kind="llm", app_id="dev"), capsys)
    names = {m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    absent = {"EstimatedCost", "TimeToFirstToken", "GenerationTime", "OutputTokensPerSecond"}
    assert not names & absent and not absent & set(record)
    assert value(record, "StreamErrors") == 0


def test_a_key_sent_as_the_model_name_never_reaches_the_emf_record(
    metrics_on: None, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "provider-key-in-the-wrong-field-0123"
    with redact.active(key):
        record = emitted(StreamStats(provider="openai", kind="llm", model=key), capsys)
    assert key not in json.dumps(record)


def test_emf_is_off_when_powertools_metrics_are_disabled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    StreamStats(provider="openai", kind="llm").emit()
    assert capsys.readouterr().out == ""
