"""ChannelPublisher at a stream's end: a tab that subscribed after the last membership
refresh still gets the whole stream and its one `end` (membership is read once more after
`end`), instead of waiting for an `end` no lane carries."""

from __future__ import annotations

from streaming_proxy.channels.publisher import ChannelPublisher
from tests.delivery import assert_complete
from tests.unit.test_publisher import FakePoster, FakeStore, publisher, stream, text_of


async def test_a_tab_that_joined_since_the_last_refresh_gets_the_text_and_the_end() -> None:
    store = FakeStore({("appA", "room"): ["early"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["room"], refresh=60.0)  # no refresh during the stream
    envelopes = stream(12)
    await pub.start()
    for e in envelopes[:-1]:
        await pub.send(e)
    store.members_by_channel[("appA", "room")].append("late")  # joined after the last read
    await pub.send(envelopes[-1])
    await pub.close()
    late = poster.received["late"]
    assert [m["type"] for m in late] == ["snapshot", "end"]
    assert late[0]["seq"] == 10 and late[0]["content"] == text_of(envelopes)
    assert late[1]["seq"] == 11
    assert_complete(late, text_of(envelopes))
    assert_complete(poster.received["early"], text_of(envelopes))
    assert (pub.stats.subscribers, pub.stats.catch_ups, pub.stats.failed) == (2, 1, 0)


class FailingLater(FakeStore):
    """Membership reads fail once `broken` is set (the table throttling)."""

    broken = False

    def members(self, app_id: str, channel: str) -> list[str]:
        if self.broken:
            raise RuntimeError("throttled")
        return super().members(app_id, channel)


async def test_the_read_after_end_failing_loses_nothing_for_the_open_lanes() -> None:
    store = FailingLater({("appA", "room"): ["early"]})
    poster = FakePoster()
    pub: ChannelPublisher = publisher(store, poster, ["room"], refresh=60.0)
    envelopes = stream(6)
    await pub.start()
    for e in envelopes[:-1]:
        await pub.send(e)
    store.broken = True
    await pub.send(envelopes[-1])
    await pub.close()
    assert_complete(poster.received["early"], text_of(envelopes))
    assert pub.stats.catch_ups == 0


async def test_an_end_only_stream_gives_a_late_tab_the_end_alone() -> None:
    store = FakeStore({("appA", "room"): []})
    poster = FakePoster()
    pub = publisher(store, poster, ["room"], refresh=60.0)
    await pub.start()
    store.members_by_channel[("appA", "room")].append("late")
    end = stream(2)[-1] | {"seq": 0}
    await pub.send(end)
    await pub.close()
    assert [m["type"] for m in poster.received["late"]] == ["end"]
