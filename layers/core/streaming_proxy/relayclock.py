"""A relay's clock: its total and idle limits, its snapshot cadence, and the time it spent
waiting for tools (relay.py arms one timer at `next_deadline` and asks `expired` when it
fires, between two events)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UpstreamTimeout

__all__ = ["RelayClock"]


@dataclass
class RelayClock:
    """Times are the event loop's (`loop.time()`). The idle limit does not run while the
    tool loop waits for tools; that wait is not generation time either (`tools_wait`)."""

    total_seconds: float
    idle_seconds: float
    # None: no snapshots (a stream without a recorder), so no wake-ups for them.
    snapshot_seconds: float | None
    started: float = 0.0
    # Since when the provider's next event is awaited (time spent handling an event is the
    # relay's, not the provider's silence).
    idle_since: float = 0.0
    next_snapshot: float = math.inf
    tools_waiting: bool = False
    tools_wait: float = 0.0
    _waiting_since: float = 0.0

    def start(self, now: float) -> None:
        self.started = self.idle_since = now
        if self.snapshot_seconds is not None:
            self.next_snapshot = now + self.snapshot_seconds

    def next_deadline(self) -> float:
        deadlines = [self.started + self.total_seconds, self.next_snapshot]
        if not self.tools_waiting:
            deadlines.append(self.idle_since + self.idle_seconds)
        return min(deadlines)

    def expired(self, now: float) -> UpstreamTimeout | None:
        """The limit that is up at `now`, if any: the total first, then the idle one."""
        if now >= self.started + self.total_seconds:
            return UpstreamTimeout(f"stream exceeded its total time of {self.total_seconds:g} s")
        if not self.tools_waiting and now >= self.idle_since + self.idle_seconds:
            return UpstreamTimeout(f"no data from the provider for {self.idle_seconds:g} s")
        return None

    def snapshot_due(self, now: float) -> bool:
        """True (once per interval) when a snapshot is due; the next one is then counted
        from `now`."""
        if now < self.next_snapshot or self.snapshot_seconds is None:
            return False
        self.next_snapshot = now + self.snapshot_seconds
        return True

    def tools(self, waiting: bool, now: float) -> None:
        """The tool loop began (True) or stopped (False) waiting for tools."""
        if waiting and not self.tools_waiting:
            self._waiting_since = now
        elif self.tools_waiting and not waiting:
            self.tools_wait += now - self._waiting_since
        self.tools_waiting = waiting
