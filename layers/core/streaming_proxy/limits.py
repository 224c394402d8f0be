"""Per-app limits on atomic DynamoDB counters: requests per minute, tokens per UTC day.

One item per app per window (`LIMIT#<app>#rpm#<yyyymmddHHMM>`, `LIMIT#<app>#tpd#<yyyy-mm-dd>`),
gone by TTL shortly after its window. A request is counted with one conditional `ADD`, so
under any concurrency exactly `rateLimit` requests get through a minute. Tokens are added
when a stream ends (`TokenMeter`, its final usage); a request is refused once the day's
count is at or over the quota, so streams already running may take it past the quota.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .errors import QuotaExceeded, RateLimited
from .events import ProviderEvent
from .outcome import StreamOutcome
from .tablekeys import limit_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MINUTE = 60
DAY = 86_400
# Counters outlive their window by this much (TTL deletes within days anyway; the margin
# only keeps a window's item from expiring while it is current).
TTL_MARGIN_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Window:
    """One counting window: its name in the key and when the next one starts."""

    name: str
    ends_at: int  # epoch seconds

    def retry_after(self, now: float) -> int:
        """Whole seconds from `now` to the next window (at least 1)."""
        return max(1, int(self.ends_at - now + 0.999))


def minute_window(now: float) -> Window:
    start = int(now) // MINUTE * MINUTE
    return Window(
        "rpm#" + datetime.fromtimestamp(start, UTC).strftime("%Y%m%d%H%M"), start + MINUTE
    )


def day_window(now: float) -> Window:
    start = int(now) // DAY * DAY
    return Window("tpd#" + datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d"), start + DAY)


class LimitStore:
    """The counters; all methods are blocking (call them on the DynamoDB pool)."""

    def __init__(
        self, client: DynamoDBClient, table: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = client
        self._table = table
        self._clock = clock

    def count_request(self, app_id: str, limit: int) -> None:
        """Count one request in the current minute; RateLimited (uncounted) if `limit`
        requests were already counted there."""
        now = self._clock()
        window = minute_window(now)
        try:
            self._db.update_item(
                TableName=self._table,
                Key=limit_key(app_id, window.name),
                UpdateExpression="ADD #n :one SET expiresAt = if_not_exists(expiresAt, :exp)",
                ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
                ExpressionAttributeNames={"#n": "requests"},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":limit": {"N": str(limit)},
                    ":exp": {"N": str(window.ends_at + TTL_MARGIN_SECONDS)},
                },
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            raise RateLimited(
                f"app '{app_id}' is over its rate limit of {limit} requests per minute; "
                f"retry in {window.retry_after(now)} s",
                retry_after=window.retry_after(now),
                details=f"rateLimit: {limit} requests per minute",
            ) from None

    def tokens_today(self, app_id: str, now: float | None = None) -> int:
        """Tokens counted for the app so far today (UTC), or on the day of `now`."""
        got = self._db.get_item(
            TableName=self._table,
            Key=limit_key(app_id, day_window(self._clock() if now is None else now).name),
            ConsistentRead=True,
            ProjectionExpression="tokens",
        )
        return int(got.get("Item", {}).get("tokens", {}).get("N", "0"))

    def check_quota(self, app_id: str, quota: int) -> None:
        """QuotaExceeded when today's tokens are at or over `quota`; `Retry-After` runs to
        the end of the day that was read (the clock is read once: at midnight a second
        read would be the next day, and the wait a whole day too long)."""
        now = self._clock()
        used = self.tokens_today(app_id, now)
        if used < quota:
            return
        wait = day_window(now).retry_after(now)
        raise QuotaExceeded(
            f"app '{app_id}' used its token quota for today ({used} of {quota} tokens); "
            "it renews at 00:00 UTC",
            retry_after=wait,
            details=f"tokenQuota: {quota} tokens per day",
        )

    def add_tokens(self, app_id: str, tokens: int) -> None:
        """Add a finished stream's tokens to today's count (unconditionally)."""
        window = day_window(self._clock())
        self._db.update_item(
            TableName=self._table,
            Key=limit_key(app_id, window.name),
            UpdateExpression="ADD tokens :n SET expiresAt = if_not_exists(expiresAt, :exp)",
            ExpressionAttributeValues={
                ":n": {"N": str(tokens)},
                ":exp": {"N": str(window.ends_at + TTL_MARGIN_SECONDS)},
            },
        )


class TokenMeter:
    """A relay observer adding the stream's final `usage.total_tokens` (estimated or not) to
    its app's day; a stream the provider refused before its first byte adds nothing."""

    def __init__(self, add: Callable[[int], Awaitable[None]]) -> None:
        self._add = add

    async def on_event(self, event: ProviderEvent) -> None:
        return None

    async def on_finish(self, outcome: StreamOutcome) -> None:
        if outcome.error is not None and not outcome.started:
            return
        tokens = outcome.usage.get("total_tokens")
        if isinstance(tokens, int) and tokens > 0:
            await self._add(tokens)
