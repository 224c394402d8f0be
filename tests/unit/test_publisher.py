"""ChannelPublisher: per-connection order, 410 cleanup, 429 backoff, late joiners, isolation."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from streaming_proxy.channels.publisher import ChannelPublisher
from streaming_proxy.errors import ConnectionGone, DeliveryRejected, DeliveryThrottled


class FakeStore:
    def __init__(self, members: dict[str, list[str]]) -> None:
        self.members_by_channel = members
        self.closed: list[str] = []
        self.queries = 0

    def members(self, channel: str) -> list[str]:
        self.queries += 1
        return list(self.members_by_channel.get(channel, []))

    def close(self, connection_id: str) -> None:
        self.closed.append(connection_id)
        for members in self.members_by_channel.values():
            if connection_id in members:
                members.remove(connection_id)


class FakePoster:
    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.gone: set[str] = set()
        self.throttle: dict[str, int] = {}
        self.slow: dict[str, float] = {}
        self.broken: set[str] = set()
        self.lock = threading.Lock()

    async def post(self, connection_id: str, data: bytes) -> None:
        if connection_id in self.slow:
            await asyncio.sleep(self.slow[connection_id])
        if connection_id in self.gone:
            raise ConnectionGone("gone")
        if connection_id in self.broken:
            raise DeliveryRejected("forbidden", status=403)
        with self.lock:
            if self.throttle.get(connection_id, 0) > 0:
                self.throttle[connection_id] -= 1
                raise DeliveryThrottled("slow down")
            self.received.setdefault(connection_id, []).append(json.loads(data))


def publisher(
    store: FakeStore,
    poster: FakePoster,
    channels: list[str],
    pool: ThreadPoolExecutor,
    refresh: float = 60.0,
) -> ChannelPublisher:
    return ChannelPublisher(
        store=store,
        poster=poster,
        channels=channels,
        executor=pool,  # type: ignore[arg-type]
        refresh_seconds=refresh,
        max_retries=5,
        drain_seconds=5,
    )


def envelope(seq: int) -> dict[str, Any]:
    return {"actionName": "a", "streamId": "st_1", "seq": seq, "type": "delta", "content": str(seq)}


async def test_every_member_gets_every_message_in_order_with_its_channel() -> None:
    store = FakeStore({"x": ["c1", "c2"], "y": ["c3", "c1"]})
    poster = FakePoster()
    with ThreadPoolExecutor(8) as pool:
        pub = publisher(store, poster, ["x", "y"], pool)
        await pub.start()
        for seq in range(50):
            await pub.send(envelope(seq))
        await pub.close()
    for conn in ("c1", "c2", "c3"):
        assert [m["seq"] for m in poster.received[conn]] == list(range(50))
    assert {m["channel"] for m in poster.received["c1"]} == {"x"}  # once, first channel
    assert {m["channel"] for m in poster.received["c3"]} == {"y"}
    assert list(poster.received["c2"][0])[:2] == ["actionName", "channel"]
    assert pub.stats.posts == 150


async def test_a_gone_connection_is_deleted_after_its_first_410_and_others_continue() -> None:
    store = FakeStore({"x": ["live", "dead"]})
    poster = FakePoster()
    poster.gone.add("dead")
    with ThreadPoolExecutor(8) as pool:
        pub = publisher(store, poster, ["x"], pool)
        await pub.start()
        for seq in range(20):
            await pub.send(envelope(seq))
        await pub.close()
    assert store.closed == ["dead"]
    assert pub.stats.gone == 1
    assert len(poster.received["live"]) == 20


async def test_throttled_posts_back_off_and_still_arrive_in_order() -> None:
    store = FakeStore({"x": ["c1"]})
    poster = FakePoster()
    poster.throttle["c1"] = 3
    with ThreadPoolExecutor(4) as pool:
        pub = publisher(store, poster, ["x"], pool)
        await pub.start()
        for seq in range(5):
            await pub.send(envelope(seq))
        await pub.close()
    assert [m["seq"] for m in poster.received["c1"]] == list(range(5))
    assert pub.stats.retries == 3


async def test_a_slow_or_broken_connection_does_not_delay_the_others() -> None:
    store = FakeStore({"x": ["fast", "slow", "broken"]})
    poster = FakePoster()
    poster.slow["slow"] = 0.2
    poster.broken.add("broken")
    with ThreadPoolExecutor(8) as pool:
        pub = publisher(store, poster, ["x"], pool)
        await pub.start()
        for seq in range(5):
            await pub.send(envelope(seq))
        async with asyncio.timeout(5):
            while len(poster.received.get("fast", [])) < 5:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        # The fast lane finished while the slow one was still posting.
        assert len(poster.received.get("slow", [])) < 5
        await pub.close()
    assert len(poster.received["slow"]) == 5
    assert pub.stats.failed == 5


async def test_late_joiners_are_found_by_the_periodic_refresh_not_per_message() -> None:
    store = FakeStore({"x": ["early"]})
    poster = FakePoster()
    with ThreadPoolExecutor(4) as pool:
        pub = publisher(store, poster, ["x"], pool, refresh=0.05)
        await pub.start()
        await pub.send(envelope(0))
        store.members_by_channel["x"].append("late")
        await asyncio.sleep(0.2)
        for seq in range(1, 40):
            await pub.send(envelope(seq))
        await pub.close()
    assert [m["seq"] for m in poster.received["late"]] == list(range(1, 40))
    assert store.queries < 40 / 2  # membership is not read per message
