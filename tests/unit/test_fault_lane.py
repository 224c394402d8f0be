"""What a lane counts as missed: a lost catch-up snapshot stands for every seq up to its own."""

from __future__ import annotations

from typing import Any

from streaming_proxy.channels.lane import Lane, Outgoing
from streaming_proxy.envelopes import snapshot_messages
from streaming_proxy.observability import PublishStats


async def never(lane: Lane, message: Outgoing) -> bool:
    return True


def catch_up(seq: int, text: str) -> list[Outgoing]:
    base: dict[str, Any] = {"streamId": "st_1", "seq": seq, "type": "snapshot", "catchUp": True}
    return [Outgoing(part) for part in snapshot_messages(base, text, max_bytes=200)]


async def test_a_lost_catch_up_is_every_seq_up_to_its_own_counted_once_for_all_its_parts() -> None:
    lane = Lane("c1", "x", never, PublishStats())
    parts = catch_up(41, "word " * 100)
    assert len(parts) > 2
    assert [lane.missed(part) for part in parts] == [42] + [0] * (len(parts) - 1)
    # A later catch-up (the connection left and came back) adds only the seqs after it.
    assert lane.missed(catch_up(50, "more")[0]) == 9
    delta = Outgoing({"streamId": "st_1", "seq": 53, "type": "delta", "content": "ab"}, 51)
    assert lane.missed(delta) == 3
    lane.task.cancel()
