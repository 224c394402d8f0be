"""A relay's clock: which limit is up, when the timer must next fire, the snapshot cadence,
and the time spent waiting for tools (relayclock.py)."""

from __future__ import annotations

import math

from streaming_proxy.relayclock import RelayClock


def clock(snapshots: float | None = 1.0) -> RelayClock:
    started = RelayClock(total_seconds=30, idle_seconds=5, snapshot_seconds=snapshots)
    started.start(100.0)
    return started


def test_the_next_deadline_is_the_nearest_limit_or_snapshot() -> None:
    assert clock().next_deadline() == 101.0  # the first snapshot
    assert clock(None).next_deadline() == 105.0  # no snapshots: the idle limit
    idle_later = clock(None)
    idle_later.idle_since = 127.0
    assert idle_later.next_deadline() == 130.0  # the total limit comes first


def test_the_total_limit_wins_over_the_idle_one() -> None:
    c = clock(None)
    assert c.expired(104.9) is None
    idle = c.expired(105.0)
    assert idle is not None and idle.status == 504 and "no data" in idle.message
    total = c.expired(130.0)
    assert total is not None and "total time of 30 s" in total.message


def test_waiting_for_tools_stops_the_idle_limit_and_is_counted_apart() -> None:
    c = clock(None)
    c.tools(True, 102.0)
    assert c.expired(120.0) is None  # silent for 20 s, but tools run
    assert c.next_deadline() == 130.0
    c.tools(True, 110.0)  # still waiting: the wait began at 102
    c.tools(False, 112.0)
    assert c.tools_wait == 10.0
    c.tools(True, 113.0)
    c.tools(False, 114.5)
    assert c.tools_wait == 11.5
    assert c.expired(120.0) is not None  # idle since 100: the limit runs again


def test_a_snapshot_is_due_once_per_interval_counted_from_when_it_was_taken() -> None:
    c = clock(2.0)
    assert not c.snapshot_due(101.9)
    assert c.snapshot_due(102.5)
    assert not c.snapshot_due(104.0)  # the next one counts from 102.5
    assert c.snapshot_due(104.5)
    assert not clock(None).snapshot_due(1e9)
    assert clock(None).next_snapshot == math.inf
