"""Structured logs (Powertools Logger) and per-stream EMF metrics; secrets never logged."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from .prices import ModelPrice, PriceTable, price_of
from .redact import scrub
from .textcheck import valid_text

if TYPE_CHECKING:
    from .jobs import StreamJob

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


# Less generation time than this gives no output rate (one read held the whole answer).
MIN_GENERATION_MS = 1.0

# How a stream ended (the final status of its record, streams.py).
FinalStatus = Literal["done", "failed", "cancelled"]


@dataclass
class StreamStats:
    """What one stream did, from which the relay writes one log line ("stream finished")
    and `emit` one EMF record (docs/operations.md, "Analytics per stream")."""

    provider: str
    kind: str
    stream_id: str = ""
    app_id: str = ""
    model: str | None = None
    channels: list[str] = field(default_factory=list)
    price: ModelPrice | None = None  # None: the price table has no entry for the model
    time_to_first_token_ms: float | None = None
    duration_ms: float = 0.0
    # First provider event to last, less the time spent waiting for tools; None if the
    # provider never answered.
    generation_ms: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0  # the completion tokens of `end.usage`
    tokens_estimated: bool = False
    messages: int = 0
    finish_reason: str = "stop"
    error: str | None = None  # the error's `type` when the stream failed
    tool_rounds: int = 0  # provider calls after the first (each one ran tools)
    tool_calls: int = 0
    # The stream's final record could not be written (every try failed): a page that
    # resumes may find it unfinished.
    record_failed: bool = False
    publish: PublishStats = field(default_factory=PublishStats)

    @classmethod
    def for_job(cls, job: StreamJob, prices: PriceTable) -> StreamStats:
        """The stats of a stream about to run `job`, priced from `prices`."""
        model = job.payload.model
        return cls(
            provider=job.provider,
            kind=job.kind,
            stream_id=job.stream_id,
            app_id=job.app_id,
            model=model,
            channels=list(job.channels),
            price=price_of(prices, job.provider, model),
        )

    def count_usage(self, usage: Mapping[str, Any]) -> None:
        """Take the token counts from the stream's `end.usage`."""
        self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        self.output_tokens = int(usage.get("completion_tokens") or 0)
        self.tokens_estimated = bool(usage.get("estimated"))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    @property
    def status(self) -> FinalStatus:
        if self.error is not None:
            return "failed"
        return "cancelled" if self.finish_reason == "cancelled" else "done"

    @property
    def cost_usd(self) -> float | None:
        """Estimated USD from the price table; None (never 0) for a model without a price."""
        if self.price is None:
            return None
        return self.price.cost(self.prompt_tokens, self.output_tokens)

    @property
    def output_tokens_per_second(self) -> float | None:
        """Completion tokens per second of generation time; None under a millisecond of it
        (the whole answer came in one piece: no rate to measure)."""
        if self.generation_ms is None or self.generation_ms < MIN_GENERATION_MS:
            return None
        return round(self.output_tokens / (self.generation_ms / 1000), 1)

    def emit(self) -> None:
        """Write the stream's EMF record to stdout (unless POWERTOOLS_METRICS_DISABLED)."""
        # Imported at the first stream's end, not at start: the connections function and
        # a stream's first byte never wait for Powertools' metrics package.
        from .emf import stream_record, write

        write(stream_record(self))

    def as_log_fields(self) -> dict[str, Any]:
        """The fields of the "stream finished" line (None values are left out of it)."""
        return {
            "app_id": self.app_id,
            "provider": self.provider,
            "model": self.model,
            "kind": self.kind,
            "status": self.status,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "tokens_estimated": self.tokens_estimated,
            "cost_usd": self.cost_usd,
            "ttft_ms": _ms(self.time_to_first_token_ms),
            "duration_ms": _ms(self.duration_ms),
            "generation_ms": _ms(self.generation_ms),
            "output_tokens_per_second": self.output_tokens_per_second,
            "messages": self.messages,
            "tool_rounds": self.tool_rounds,
            "tool_calls": self.tool_calls,
            "channels": len(self.channels),
            "channel_names": self.channels,
            "subscribers": self.publish.subscribers,
            "posts": self.publish.posts,
            "retries": self.publish.retries,
            "gone": self.publish.gone,
            "post_failures": self.publish.failed,
            "dropped": self.publish.dropped,
            "merged": self.publish.merged,
            "catch_ups": self.publish.catch_ups,
            "window_ms": self.publish.window_ms,
            "record_failed": self.record_failed,
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
