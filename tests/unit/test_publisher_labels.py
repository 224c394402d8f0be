"""ChannelPublisher: the channel a message is labelled with follows the connection's current
membership (the first of the stream's channels, in the request's order, that it is in),
while its one lane, its order and its messages stay as they were."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from streaming_proxy.channels.lane import Outgoing
from streaming_proxy.channels.publisher import ChannelPublisher
from tests.delivery import assert_complete, covered
from tests.unit.test_publisher import (
    FakePoster,
    FakeStore,
    envelope,
    publisher,
    stream,
    text_of,
)

REFRESH = 0.02


async def settle() -> None:
    """Long enough for a few membership refreshes and every queued post."""
    await asyncio.sleep(REFRESH * 5)


async def send_all(pub: ChannelPublisher, envelopes: list[dict[str, Any]]) -> None:
    for e in envelopes:
        await pub.send(e)
        await asyncio.sleep(0.001)


def labels(received: list[dict[str, Any]]) -> dict[int, str]:
    return {m["seq"]: m["channel"] for m in received if m["type"] != "snapshot"}


async def test_a_page_leaving_its_first_channel_is_labelled_with_the_one_it_stays_in() -> None:
    store = FakeStore({("appA", "A"): ["both", "onlyA"], ("appA", "B"): ["both"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["A", "B"], refresh=REFRESH)
    envelopes = stream(30)
    await pub.start()
    await send_all(pub, envelopes[:10])
    await settle()
    store.members_by_channel[("appA", "A")].remove("both")
    await settle()
    await send_all(pub, envelopes[10:])
    await pub.close()
    both = poster.received["both"]
    assert labels(both) == {seq: "A" if seq < 10 else "B" for seq in range(30)}
    # The same lane all along: every seq once, in order, no catch-up, one subscriber more.
    assert covered(both) == list(range(30))
    assert all(m["type"] != "snapshot" for m in both)
    assert_complete(both, text_of(envelopes))
    assert set(labels(poster.received["onlyA"]).values()) == {"A"}
    assert (pub.stats.subscribers, pub.stats.catch_ups, pub.stats.failed) == (2, 0, 0)


async def test_joining_an_earlier_channel_of_the_request_takes_its_label() -> None:
    store = FakeStore({("appA", "B"): ["c1"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["A", "B"], refresh=REFRESH)
    envelopes = stream(20)
    await pub.start()
    await send_all(pub, envelopes[:8])
    await settle()
    store.members_by_channel[("appA", "A")] = ["c1"]
    await settle()
    await send_all(pub, envelopes[8:])
    await pub.close()
    received = poster.received["c1"]
    assert labels(received) == {seq: "B" if seq < 8 else "A" for seq in range(20)}
    assert covered(received) == list(range(20))
    assert pub.stats.catch_ups == 0


async def test_a_page_back_through_another_channel_is_labelled_with_it_on_its_old_lane() -> None:
    """It left A (its lane retired, still delivering) and came back through B: the lane is
    reopened, so order holds, and its catch-up and every later message say B."""
    store = FakeStore({("appA", "A"): ["c1"]})
    poster = FakePoster()
    released = asyncio.Event()
    poster.script["c1"] = [released.wait]  # its first post hangs: the lane is still busy
    pub = publisher(store, poster, ["A", "B"], refresh=REFRESH)
    envelopes = stream(30)
    await pub.start()
    await send_all(pub, envelopes[:10])
    store.members_by_channel[("appA", "A")] = []
    await settle()
    store.members_by_channel[("appA", "B")] = ["c1"]
    await settle()
    released.set()
    await send_all(pub, envelopes[10:])
    await pub.close()
    received = poster.received["c1"]
    snapshot = next(m for m in received if m["type"] == "snapshot")
    assert snapshot["channel"] == "B"
    after = received[received.index(snapshot) :]
    assert {m["channel"] for m in after} == {"B"}
    assert covered(after) == list(range(10, 30))
    assert_complete(received, text_of(envelopes))
    assert (pub.stats.subscribers, pub.stats.failed) == (1, 0)


def test_a_message_is_labelled_with_the_lane_it_is_posted_on_even_a_catch_up() -> None:
    """A catch-up is built with the label of the lane's join (to size its parts); queued
    behind an in-flight post, it is posted with the lane's label of that moment."""
    part = Outgoing(envelope(9, "snapshot", channel="A", content="so far", catchUp=True))
    posted = json.loads(part.encoded("B"))
    assert posted["channel"] == "B" and list(posted)[:2] == ["actionName", "channel"]
    assert json.loads(part.encoded("A"))["channel"] == "A"
