"""Structured logs (Powertools Logger) and per-stream EMF metrics; secrets never logged."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from .redact import scrub
from .textcheck import valid_text

SERVICE = "streaming-proxy"
NAMESPACE = "StreamingProxy"


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON lines with every known secret and credential shape replaced: the
    last net under exception texts and anything a provider said."""

    def format(self, record: logging.LogRecord) -> str:
        # Valid UTF-8 too: a lone surrogate would make the handler drop the whole line.
        return valid_text(scrub(super().format(record)))


@cache
def get_logger() -> Logger:
    """The process-wide structured logger (level from LOG_LEVEL / POWERTOOLS_LOG_LEVEL)."""
    import os

    level = os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO"
    return Logger(service=SERVICE, level=level, logger_formatter=RedactingFormatter())


@dataclass
class PublishStats:
    """Fan-out counters of one stream: what was delivered, and what was not.

    `failed` counts live connections that missed at least one message (retries exhausted
    or still queued when the drain time ran out) and `dropped` the seqs they missed;
    `gone` counts connections found closed (410); `merged` counts messages saved by
    joining a lagging connection's backlog; `window_ms` is the widest coalescing window
    the stream used (it widens while the connections cannot keep up).
    """

    subscribers: int = 0
    posts: int = 0
    retries: int = 0
    gone: int = 0
    failed: int = 0
    dropped: int = 0
    merged: int = 0
    catch_ups: int = 0
    window_ms: int = 0


@dataclass
class StreamStats:
    """What one stream did; flushed as one EMF record when it ends."""

    provider: str
    kind: str
    time_to_first_token_ms: float | None = None
    duration_ms: float = 0.0
    output_tokens: int = 0
    messages: int = 0
    finish_reason: str = "stop"
    tool_rounds: int = 0  # provider calls after the first (each one ran tools)
    tool_calls: int = 0
    publish: PublishStats = field(default_factory=PublishStats)

    def emit(self) -> None:
        # EphemeralMetrics keeps no state shared between concurrent streams of one process.
        metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        metrics.add_dimension(name="provider", value=self.provider)
        if self.time_to_first_token_ms is not None:
            metrics.add_metric(
                "TimeToFirstToken", MetricUnit.Milliseconds, self.time_to_first_token_ms
            )
        metrics.add_metric("StreamDuration", MetricUnit.Milliseconds, self.duration_ms)
        metrics.add_metric("OutputTokens", MetricUnit.Count, self.output_tokens)
        metrics.add_metric("MessagesPublished", MetricUnit.Count, self.messages)
        metrics.add_metric("FanoutPosts", MetricUnit.Count, self.publish.posts)
        metrics.add_metric("GoneConnections", MetricUnit.Count, self.publish.gone)
        metrics.add_metric("PostRetries", MetricUnit.Count, self.publish.retries)
        metrics.add_metric("PostFailures", MetricUnit.Count, self.publish.failed)
        metrics.add_metric("MessagesDropped", MetricUnit.Count, self.publish.dropped)
        metrics.add_metric("MessagesMerged", MetricUnit.Count, self.publish.merged)
        metrics.add_metric("SubscribersReached", MetricUnit.Count, self.publish.subscribers)
        metrics.add_metric("CatchUps", MetricUnit.Count, self.publish.catch_ups)
        if self.publish.subscribers:  # how far the channels' window widened under load
            metrics.add_metric("CoalescingWindow", MetricUnit.Milliseconds, self.publish.window_ms)
        metrics.add_metric("ToolRounds", MetricUnit.Count, self.tool_rounds)
        metrics.add_metric("ToolCalls", MetricUnit.Count, self.tool_calls)
        metrics.add_metadata(key="finish_reason", value=self.finish_reason)
        metrics.add_metadata(key="kind", value=self.kind)
        metrics.flush_metrics()

    def as_log_fields(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "ttft_ms": self.time_to_first_token_ms,
            "duration_ms": round(self.duration_ms, 1),
            "output_tokens": self.output_tokens,
            "messages": self.messages,
            "finish_reason": self.finish_reason,
            "tool_rounds": self.tool_rounds,
            "tool_calls": self.tool_calls,
            "subscribers": self.publish.subscribers,
            "posts": self.publish.posts,
            "retries": self.publish.retries,
            "gone": self.publish.gone,
            "post_failures": self.publish.failed,
            "dropped": self.publish.dropped,
            "merged": self.publish.merged,
            "catch_ups": self.publish.catch_ups,
            "window_ms": self.publish.window_ms,
        }
