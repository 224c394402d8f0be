"""Per-stream metrics are CloudWatch EMF records with the documented names."""

from __future__ import annotations

import json

import pytest

from streaming_proxy.observability import PublishStats, StreamStats


def test_stream_stats_flush_as_one_emf_record(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    stats = StreamStats(
        provider="openai",
        kind="llm",
        time_to_first_token_ms=123.0,
        duration_ms=900.0,
        output_tokens=42,
        messages=17,
        tool_rounds=2,
        tool_calls=3,
        publish=PublishStats(
            subscribers=3, posts=34, gone=1, retries=2, failed=0, catch_ups=1, window_ms=45
        ),
    )
    stats.emit()
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "StreamingProxy"
    names = {m["Name"] for m in directive["Metrics"]}
    assert {
        "TimeToFirstToken",
        "OutputTokens",
        "StreamDuration",
        "FanoutPosts",
        "GoneConnections",
        "PostRetries",
        "PostFailures",
        "MessagesDropped",
        "MessagesMerged",
        "SubscribersReached",
        "CatchUps",
        "ToolRounds",
        "ToolCalls",
        "CoalescingWindow",
        "RecordFailures",
    } <= names
    assert record["TimeToFirstToken"] in (123.0, [123.0])
    assert record["FanoutPosts"] in (34, [34])
    assert record["CatchUps"] in (1, [1]) and record["ToolCalls"] in (3, [3])
    assert record["CoalescingWindow"] in (45, [45])
    assert record["provider"] == "openai"
