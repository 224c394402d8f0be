"""The per-stream CloudWatch EMF record: metrics by app and provider, plus the
service-wide aggregate the template's alarms read, in one JSON line."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from .observability import NAMESPACE, SERVICE
from .redact import scrub

if TYPE_CHECKING:
    from .observability import StreamStats

# Published a second time with the single dimension set {service}: one series each for
# the whole deployment, whatever the apps and providers (alarms need a fixed series).
AGGREGATE = ("PostFailures", "MessagesDropped", "StreamErrors", "RecordFailures")


def stream_record(stats: StreamStats) -> dict[str, Any]:
    """The EMF document of one stream (docs/operations.md lists every member)."""
    # EphemeralMetrics keeps no state shared between concurrent streams of one process.
    metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    metrics.add_dimension(name="app", value=stats.app_id or "-")
    metrics.add_dimension(name="provider", value=stats.provider)
    for name, unit, value in _metrics(stats):
        if value is not None:
            metrics.add_metric(name, unit, value)
    for key, value in _properties(stats).items():
        metrics.add_metadata(key=key, value=value)
    record: dict[str, Any] = dict(metrics.serialize_metric_set())
    units = {m["Name"]: m["Unit"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    record["_aws"]["CloudWatchMetrics"].append(
        {
            "Namespace": NAMESPACE,
            "Dimensions": [["service"]],
            "Metrics": [{"Name": name, "Unit": units[name]} for name in AGGREGATE],
        }
    )
    return record


def count_record(metric: str, value: int = 1) -> dict[str, Any]:
    """An EMF document counting one service-wide event outside any stream (the dead-letter
    handler's): the single dimension set {service}, the one an alarm reads."""
    metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    metrics.add_metric(metric, MetricUnit.Count, value)
    return dict(metrics.serialize_metric_set())


def write(record: dict[str, Any]) -> None:
    """One line on stdout, flushed at once: under the Lambda Web Adapter stdout is a pipe,
    whose buffer would hold the record back until it fills (or lose it at shutdown). Not
    scrubbed as a whole: the one member a request names (the model) is scrubbed where it is
    set, and the rest are numbers and names the proxy chose."""
    if is_metrics_disabled():
        return
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _metrics(stats: StreamStats) -> list[tuple[str, MetricUnit, float | None]]:
    publish = stats.publish
    ms, count = MetricUnit.Milliseconds, MetricUnit.Count
    return [
        ("TimeToFirstToken", ms, stats.time_to_first_token_ms),
        ("StreamDuration", ms, stats.duration_ms),
        ("GenerationTime", ms, stats.generation_ms),
        ("PromptTokens", count, stats.prompt_tokens),
        ("OutputTokens", count, stats.output_tokens),
        ("TotalTokens", count, stats.total_tokens),
        ("OutputTokensPerSecond", MetricUnit.CountPerSecond, stats.output_tokens_per_second),
        ("EstimatedCost", MetricUnit.NoUnit, stats.cost_usd),
        ("MessagesPublished", count, stats.messages),
        ("Channels", count, len(stats.channels)),
        ("FanoutPosts", count, publish.posts),
        ("GoneConnections", count, publish.gone),
        ("PostRetries", count, publish.retries),
        ("PostFailures", count, publish.failed),
        ("MessagesDropped", count, publish.dropped),
        ("MessagesMerged", count, publish.merged),
        ("SubscribersReached", count, publish.subscribers),
        ("CatchUps", count, publish.catch_ups),
        # How far the channels' window widened under load (only with someone to post to).
        ("CoalescingWindow", ms, publish.window_ms if publish.subscribers else None),
        ("ToolRounds", count, stats.tool_rounds),
        ("ToolCalls", count, stats.tool_calls),
        ("StreamErrors", count, 1 if stats.status == "failed" else 0),
        ("RecordFailures", count, 1 if stats.record_failed else 0),
    ]


def _properties(stats: StreamStats) -> dict[str, Any]:
    """Searchable members that are not metrics: per-stream values, unbounded ones included
    (a model name as a dimension would make one metric per model)."""
    return {
        "stream_id": stats.stream_id,
        # The one member a request names (a key pasted as a model name stays out of logs).
        "model": scrub(stats.model) if stats.model is not None else None,
        "kind": stats.kind,
        "status": stats.status,
        "finish_reason": stats.finish_reason,
        "error": stats.error,
        "tokens_estimated": stats.tokens_estimated,
    }
