"""A detached relay's heartbeat on its stream record: how the dead-letter handler tells a
stream a relay still runs from a lost one (docs/architecture.md, decision 46)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_RELAY_SECONDS", "STALE_BEATS", "Heartbeat", "heartbeat_of"]

# Lambda ends any run 900 s after it started (its largest timeout), and a relay claims
# after its run started: one claimed longer ago cannot be running, whatever its heartbeat.
MAX_RELAY_SECONDS = 900.0
# A claimed relay is taken for dead once this many of its heartbeats are missing.
STALE_BEATS = 6


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A claimed relay's sign of life on its record (epoch seconds)."""

    claimed_at: float
    alive_at: float
    every: float

    def stale_before(self, now: float) -> float:
        """The `aliveAt` under which a heartbeat is stale at `now`."""
        return now - STALE_BEATS * self.every

    def outlived(self, now: float) -> bool:
        """Claimed longer ago than any relay can run (a relay that timed out, say)."""
        return now > self.claimed_at + MAX_RELAY_SECONDS

    def live(self, now: float) -> bool:
        """Whether the relay may still run: a fresh heartbeat, within Lambda's lifetime."""
        return not self.outlived(now) and self.alive_at > self.stale_before(now)

    def dead_at(self) -> float:
        """When the relay is taken for dead unless it beats again: its heartbeat stale, or
        Lambda's lifetime over (`live` holds before, not after)."""
        return min(self.alive_at + STALE_BEATS * self.every, self.claimed_at + MAX_RELAY_SECONDS)


def heartbeat_of(item: dict[str, Any]) -> Heartbeat | None:
    """The claim's heartbeat; None unclaimed, or claimed before relays kept one (such a
    record's relay is judged as it was then: lost once its dead letter comes)."""
    if "aliveAt" not in item or "claimedAt" not in item:
        return None
    return Heartbeat(
        claimed_at=float(item["claimedAt"]["N"]),
        alive_at=float(item["aliveAt"]["N"]),
        every=float(item.get("beatSeconds", {}).get("N", "10")),
    )
