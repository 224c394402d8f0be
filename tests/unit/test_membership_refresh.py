"""Membership refreshes cost only where a late joiner can exist: a connection's private
channel (`tab|<id>`) is read once; named channels go on being refreshed."""

from __future__ import annotations

import asyncio

from tests.delivery import assert_complete
from tests.unit.test_publisher import FakePoster, FakeStore, publisher, stream, text_of


class CountingStore(FakeStore):
    """Membership, and which channels were read."""

    def __init__(self, members: dict[tuple[str, str], list[str]]) -> None:
        super().__init__(members)
        self.reads: list[str] = []

    def members(self, app_id: str, channel: str) -> list[str]:
        self.reads.append(channel)
        return super().members(app_id, channel)


async def test_a_stream_to_private_channels_only_reads_membership_once() -> None:
    store = CountingStore({("appA", "tab|c1"): ["c1"], ("appA", "tab|c2"): ["c2"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["tab|c1", "tab|c2"], refresh=0.02)
    envelopes = stream(20)
    await pub.start()
    for e in envelopes:
        await pub.send(e)
        await asyncio.sleep(0.01)  # 0.2 s: ten refresh intervals
    await pub.close()
    assert sorted(store.reads) == ["tab|c1", "tab|c2"]  # the first read of each, no refresh
    for conn in ("c1", "c2"):
        assert_complete(poster.received[conn], text_of(envelopes))


async def test_named_channels_are_refreshed_beside_a_private_one_and_it_keeps_its_member() -> None:
    store = CountingStore({("appA", "tab|c1"): ["c1"], ("appA", "x"): ["early"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["tab|c1", "x"], refresh=0.02)
    envelopes = stream(30)
    await pub.start()
    for e in envelopes[:10]:
        await pub.send(e)
    store.members_by_channel[("appA", "x")].append("late")
    await asyncio.sleep(0.15)  # refreshes find the late joiner
    for e in envelopes[10:]:
        await pub.send(e)
    await pub.close()
    assert store.reads.count("tab|c1") == 1 and 2 < store.reads.count("x") < 20
    for conn in ("c1", "early"):
        assert_complete(poster.received[conn], text_of(envelopes))
    assert poster.received["late"][0]["type"] == "snapshot"
    assert_complete(poster.received["late"], text_of(envelopes))
