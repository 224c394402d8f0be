"""ChannelPublisher: order per connection, app isolation, retries, merging, drain accounting,
catch-up for late joiners. Every failure is either retried to success or counted."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from streaming_proxy import aws
from streaming_proxy.blocking import BlockingCalls
from streaming_proxy.channels.poster import BotoPoster
from streaming_proxy.channels.publisher import ChannelPublisher, RetryPolicy, SlowConnections
from streaming_proxy.config import MAX_POST_CONCURRENCY
from streaming_proxy.envelopes import MAX_MESSAGE_BYTES, encode
from streaming_proxy.errors import (
    ConnectionGone,
    DeliveryRejected,
    DeliveryServerError,
    DeliveryThrottled,
    DeliveryUnreachable,
    PayloadTooLarge,
)
from streaming_proxy.messaging import Delivery, check_size, message_envelope
from streaming_proxy.messaging import publish as publish_message
from tests.delivery import assert_complete, covered, replay

Step = Exception | float | Callable[[], Awaitable[None]]


class FakeStore:
    """Membership by (app, channel), as the table keys it."""

    def __init__(self, members: dict[tuple[str, str], list[str]]) -> None:
        self.members_by_channel = members
        self.closed: list[str] = []
        self.queries = 0

    def members(self, app_id: str, channel: str) -> list[str]:
        self.queries += 1
        return list(self.members_by_channel.get((app_id, channel), []))

    def close(self, connection_id: str) -> None:
        self.closed.append(connection_id)
        for members in self.members_by_channel.values():
            if connection_id in members:
                members.remove(connection_id)


class FakePoster:
    """Posts into per-connection inboxes; `script[cid]` lists what the next posts do:
    an exception to raise, seconds to wait first, or a coroutine to await first."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.script: dict[str, list[Step]] = {}
        self.always: dict[str, Exception] = {}
        self.delay: dict[str, float] = {}
        self.attempts = 0
        self.slots = asyncio.Semaphore(1000)  # workers: more than any test's connections

    async def post(self, connection_id: str, data: bytes) -> None:
        self.attempts += 1
        if self.delay.get(connection_id):
            await asyncio.sleep(self.delay[connection_id])
        steps = self.script.get(connection_id)
        if steps:
            step = steps.pop(0)
            if isinstance(step, Exception):
                raise step
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                await step()
        if connection_id in self.always:
            raise self.always[connection_id]
        self.received.setdefault(connection_id, []).append(json.loads(data))

    async def aclose(self) -> None:
        return None


POLICY = RetryPolicy(max_retries=3, base_seconds=0.001, max_seconds=0.01, post_timeout_seconds=0.2)


def publisher(
    store: FakeStore,
    poster: Any,
    channels: list[str],
    *,
    app: str = "appA",
    refresh: float = 60.0,
    drain: float = 5.0,
    policy: RetryPolicy = POLICY,
    window: float = 0.0,
    max_window: float | None = None,
    slow: SlowConnections | None = None,
) -> ChannelPublisher:
    return ChannelPublisher(
        store=store,  # type: ignore[arg-type]
        poster=poster,
        db=BlockingCalls(4, "test-db"),
        app_id=app,
        channels=channels,
        stream_id="st_1",
        refresh_seconds=refresh,
        retry=policy,
        drain_seconds=drain,
        window_seconds=window,
        max_window_seconds=max_window,
        slow=slow,
    )


def envelope(seq: int, type_: str = "delta", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"actionName": "a", "streamId": "st_1", "seq": seq, "type": type_}
    if type_ in ("delta", "thinking"):
        body["content"] = fields.pop("content", f"<{seq}>")
    return {**body, **fields}


def stream(count: int) -> list[dict[str, Any]]:
    """threadInfo, count - 2 deltas, end: the shape of a real stream."""
    return [
        envelope(0, "threadInfo", content={"streamId": "st_1"}),
        *(envelope(seq) for seq in range(1, count - 1)),
        envelope(count - 1, "end", finish_reason="stop"),
    ]


def text_of(envelopes: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in envelopes if e["type"] == "delta")


async def publish(pub: ChannelPublisher, envelopes: list[dict[str, Any]], gap: float = 0) -> None:
    await pub.start()
    for e in envelopes:
        await pub.send(e)
        if gap:
            await asyncio.sleep(gap)
    await pub.close()


async def test_every_member_gets_every_message_in_order_with_its_channel() -> None:
    store = FakeStore({("appA", "x"): ["c1", "c2"], ("appA", "y"): ["c3", "c1"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["x", "y"])
    await publish(pub, stream(50), gap=0.002)  # posts keep up: one post per message
    for conn in ("c1", "c2", "c3"):
        assert [m["seq"] for m in poster.received[conn]] == list(range(50))
    assert {m["channel"] for m in poster.received["c1"]} == {"x"}  # once, first channel
    assert {m["channel"] for m in poster.received["c3"]} == {"y"}
    assert list(poster.received["c2"][0])[:2] == ["actionName", "channel"]
    assert (pub.stats.posts, pub.stats.subscribers, pub.stats.failed) == (150, 3, 0)
    assert pub.stats.merged == 0


async def test_members_of_the_same_channel_name_in_another_app_get_nothing() -> None:
    store = FakeStore({("appA", "shared"): ["a1"], ("appB", "shared"): ["b1"]})
    poster = FakePoster()
    await publish(publisher(store, poster, ["shared"], app="appA"), stream(5))
    assert set(poster.received) == {"a1"}


async def test_a_gone_connection_is_deleted_after_its_first_410_and_others_continue() -> None:
    store = FakeStore({("appA", "x"): ["live", "dead"]})
    poster = FakePoster()
    poster.always["dead"] = ConnectionGone("gone")
    pub = publisher(store, poster, ["x"])
    await publish(pub, stream(20))
    assert store.closed == ["dead"]
    assert (pub.stats.gone, pub.stats.failed, pub.stats.dropped) == (1, 0, 0)
    assert covered(poster.received["live"]) == list(range(20))


@pytest.mark.parametrize(
    "fault",
    [
        DeliveryThrottled("slow down"),
        DeliveryServerError("HTTP 500", status=500),
        DeliveryUnreachable("connection reset"),
    ],
    ids=["429", "5xx", "unreachable"],
)
async def test_transient_failures_are_retried_and_everything_arrives_in_order(
    fault: Exception,
) -> None:
    store = FakeStore({("appA", "x"): ["c1", "c2"]})
    poster = FakePoster()
    poster.script["c1"] = [fault, fault, fault]  # three failed tries, retried each time
    pub = publisher(store, poster, ["x"])
    envelopes = stream(8)
    await publish(pub, envelopes)
    for conn in ("c1", "c2"):
        assert_complete(poster.received[conn], text_of(envelopes))
    assert (pub.stats.retries, pub.stats.failed, pub.stats.dropped) == (3, 0, 0)


async def test_a_post_that_hangs_past_its_timeout_is_retried() -> None:
    store = FakeStore({("appA", "x"): ["c1"]})
    poster = FakePoster()
    poster.script["c1"] = [5.0]  # the first post hangs far longer than the post timeout
    pub = publisher(store, poster, ["x"])
    envelopes = stream(4)
    await asyncio.wait_for(publish(pub, envelopes), 5)
    assert_complete(poster.received["c1"], text_of(envelopes))
    assert pub.stats.retries == 1


async def test_a_refused_post_is_counted_not_retried_and_the_next_messages_still_go() -> None:
    store = FakeStore({("appA", "x"): ["c1"]})
    poster = FakePoster()
    poster.script["c1"] = [DeliveryRejected("forbidden", status=403)]
    pub = publisher(store, poster, ["x"])
    await publish(pub, stream(6))
    assert covered(poster.received["c1"]) == [1, 2, 3, 4, 5]
    assert (pub.stats.retries, pub.stats.failed, pub.stats.dropped) == (0, 1, 1)


async def test_retries_run_out_then_the_loss_is_counted_and_delivery_goes_on() -> None:
    store = FakeStore({("appA", "x"): ["c1"]})
    poster = FakePoster()
    poster.script["c1"] = [DeliveryServerError("HTTP 503", status=503)] * 4  # 1 try + 3 retries
    pub = publisher(store, poster, ["x"])
    await publish(pub, stream(5))
    assert covered(poster.received["c1"]) == [1, 2, 3, 4]
    assert (pub.stats.retries, pub.stats.failed, pub.stats.dropped) == (3, 1, 1)


async def test_a_lane_that_falls_behind_merges_its_backlog_and_loses_nothing() -> None:
    store = FakeStore({("appA", "x"): ["fast", "slow"]})
    poster = FakePoster()
    poster.delay["slow"] = 0.02
    pub = publisher(store, poster, ["x"])
    envelopes = [
        envelope(0, "threadInfo", content={}),
        *(envelope(seq, "thinking" if seq < 20 else "delta") for seq in range(1, 199)),
        envelope(199, "end", finish_reason="stop"),
    ]
    await publish(pub, envelopes, gap=0.001)
    fast = assert_complete(poster.received["fast"], text_of(envelopes))
    slow = assert_complete(poster.received["slow"], text_of(envelopes))
    assert len(poster.received["fast"]) == 200
    assert len(poster.received["slow"]) < 100  # merged: far fewer posts, same text
    assert slow.thinking == fast.thinking == "".join(f"<{s}>" for s in range(1, 20))
    merged = [m for m in poster.received["slow"] if "firstSeq" in m]
    assert merged and all(m["type"] in ("delta", "thinking") for m in merged)
    assert pub.stats.merged == 200 - len(poster.received["slow"])
    assert pub.stats.failed == 0


async def test_a_slow_connection_does_not_delay_the_others() -> None:
    store = FakeStore({("appA", "x"): ["fast", "slow"]})
    poster = FakePoster()
    poster.delay["slow"] = 0.3
    pub = publisher(store, poster, ["x"])
    await pub.start()
    for e in stream(5):
        await pub.send(e)
    async with asyncio.timeout(2):
        while covered(poster.received.get("fast", []))[-1:] != [4]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert len(poster.received.get("slow", [])) < 2  # the slow one is still on its first post
    await pub.close()
    assert_complete(poster.received["slow"], text_of(stream(5)))


async def test_what_is_still_queued_at_drain_time_is_counted_exactly() -> None:
    store = FakeStore({("appA", "x"): ["ok", "stuck"]})
    poster = FakePoster()
    release = asyncio.Event()

    async def never() -> None:
        await release.wait()

    # The second post to "stuck" never returns; its own timeout is long (drain comes first).
    poster.script["stuck"] = [0.0, never]  # type: ignore[list-item]
    policy = RetryPolicy(max_retries=0, post_timeout_seconds=30)
    pub = publisher(store, poster, ["x"], drain=0.3, policy=policy)
    envelopes = stream(10)
    started = asyncio.get_running_loop().time()
    await publish(pub, envelopes)
    assert asyncio.get_running_loop().time() - started < 2
    assert covered(poster.received["ok"]) == list(range(10))
    assert [m["seq"] for m in poster.received["stuck"]] == [0]
    # seq 1 in flight, 2..8 merged in the queue behind it, 9 the end: 9 seqs undelivered.
    assert (pub.stats.failed, pub.stats.dropped) == (1, 9)
    release.set()


async def test_a_late_joiner_gets_the_text_so_far_then_every_live_message() -> None:
    store = FakeStore({("appA", "x"): ["early"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["x"], refresh=0.05)
    envelopes = stream(40)
    await pub.start()
    for e in envelopes[:10]:
        await pub.send(e)
    store.members_by_channel[("appA", "x")].append("late")
    await asyncio.sleep(0.2)  # a refresh finds it
    for e in envelopes[10:]:
        await pub.send(e)
    await pub.close()
    late = poster.received["late"]
    assert late[0]["type"] == "snapshot" and late[0]["seq"] == 9
    assert late[0]["content"] == text_of(envelopes[:10]) and late[0]["status"] == "streaming"
    assert late[0]["channel"] == "x" and late[0]["actionName"] == "a"
    assert covered(late[1:]) == list(range(10, 40))
    assert_complete(late, text_of(envelopes))
    assert pub.stats.catch_ups == 1
    assert store.queries < 20  # membership is read on a timer, never per message


async def test_text_is_joined_over_the_window_and_nothing_else_waits_for_it() -> None:
    store = FakeStore({("appA", "x"): ["c1", "c2"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["x"], window=0.05)
    envelopes = stream(30)
    await publish(pub, envelopes, gap=0.001)
    for conn in ("c1", "c2"):
        got = poster.received[conn]
        assert_complete(got, text_of(envelopes))
        # threadInfo, the first delta at once, then a few joined batches, then end.
        assert got[1]["seq"] == 1 and "firstSeq" not in got[1]
        assert len(got) < 12 and any(m.get("firstSeq") for m in got)
    assert pub.stats.window_ms == 50


async def test_a_joiner_during_a_window_gets_no_text_twice() -> None:
    store = FakeStore({("appA", "x"): ["early"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["x"], refresh=0.02, window=0.2)
    envelopes = stream(20)
    await pub.start()
    for e in envelopes[:10]:  # seq 2..9 are held for the window when "late" joins
        await pub.send(e)
    store.members_by_channel[("appA", "x")].append("late")
    await asyncio.sleep(0.1)
    for e in envelopes[10:]:
        await pub.send(e)
    await pub.close()
    late = poster.received["late"]
    assert late[0]["type"] == "snapshot" and late[0]["seq"] == 1
    assert_complete(late, text_of(envelopes))
    assert_complete(poster.received["early"], text_of(envelopes))


async def test_a_snapshot_says_only_what_the_channels_were_sent() -> None:
    # Text held for the window is not in it, so no joined message straddles its seq.
    pub = publisher(FakeStore({("appA", "x"): ["c1"]}), FakePoster(), ["x"], window=10.0)
    envelopes = stream(6)
    await pub.start()
    for e in envelopes[:4]:
        await pub.send(e)
    assert pub.sent_so_far() == ("<1>", 1)  # seq 2 and 3 wait for the window
    await pub.send(envelopes[4])
    await pub.send(envelopes[5])  # end: releases everything first
    assert pub.sent_so_far() == ("<1><2><3><4>", 5)
    await pub.close()


async def test_a_fan_out_that_cannot_keep_up_widens_the_window_and_loses_nothing() -> None:
    members = [f"c{i}" for i in range(20)]
    store = FakeStore({("appA", "x"): list(members)})
    poster = FakePoster()
    poster.delay = dict.fromkeys(members, 0.03)  # each post takes longer than the window
    pub = publisher(store, poster, ["x"], window=0.01, max_window=0.2)
    envelopes = stream(120)
    await publish(pub, envelopes, gap=0.002)
    assert pub.stats.window_ms > 10
    for conn in members:
        assert_complete(poster.received[conn], text_of(envelopes))
    # Fewer, larger messages: far fewer than one post per 10 ms of a ~0.25 s stream.
    assert pub.stats.posts < 20 * 20


async def test_one_slow_connection_does_not_widen_the_window_for_the_others() -> None:
    members = [f"c{i}" for i in range(20)]
    store = FakeStore({("appA", "x"): list(members)})
    poster = FakePoster()
    for conn in ("c0", "c1", "c2"):  # 15 %: more than the tenth that counts as behind
        poster.always[conn] = DeliveryUnreachable("no answer")
        poster.delay[conn] = 0.02
    pub = publisher(store, poster, ["x"], window=0.01, max_window=0.2)
    envelopes = stream(60)
    await publish(pub, envelopes, gap=0.002)
    # At most one step wider: until their first post fails they look merely busy.
    assert pub.stats.window_ms <= 15
    assert pub.stats.failed == 3
    for conn in members[3:]:
        assert_complete(poster.received[conn], text_of(envelopes))


async def test_a_connection_that_leaves_and_rejoins_keeps_one_ordered_lane() -> None:
    store = FakeStore({("appA", "x"): ["c1"]})
    poster = FakePoster()
    poster.delay["c1"] = 0.01
    pub = publisher(store, poster, ["x"], refresh=0.02)
    envelopes = stream(30)
    await pub.start()
    for e in envelopes[:10]:
        await pub.send(e)
    store.members_by_channel[("appA", "x")] = []
    await asyncio.sleep(0.05)
    store.members_by_channel[("appA", "x")] = ["c1"]
    await asyncio.sleep(0.05)
    for e in envelopes[10:]:
        await pub.send(e)
    await pub.close()
    state = replay(poster.received["c1"])
    assert state.text == text_of(envelopes) and state.ends == 1


async def test_a_poster_bug_is_counted_and_does_not_kill_the_lane() -> None:
    store = FakeStore({("appA", "x"): ["c1"]})
    poster = FakePoster()
    poster.script["c1"] = [KeyError("bug")]
    pub = publisher(store, poster, ["x"])
    await publish(pub, stream(4))
    assert covered(poster.received["c1"]) == [1, 2, 3]
    assert (pub.stats.failed, pub.stats.dropped) == (1, 1)


async def test_a_hundred_connections_with_jittery_faults_all_end_exact() -> None:
    rng = random.Random(7)
    members = [f"c{i}" for i in range(100)]
    store = FakeStore({("appA", "x"): list(members)})
    poster = FakePoster()
    for conn in members:
        poster.delay[conn] = rng.choice([0, 0, 0.001, 0.003])
        poster.script[conn] = [
            rng.choice([DeliveryThrottled("t"), DeliveryServerError("e", status=502), 0.0])
            for _ in range(3)
        ]
    pub = publisher(store, poster, ["x"])
    envelopes = stream(300)
    await publish(pub, envelopes)
    for conn in members:
        assert_complete(poster.received[conn], text_of(envelopes))
    assert (pub.stats.failed, pub.stats.dropped) == (0, 0)


async def test_connections_that_never_answer_cannot_take_every_post_slot() -> None:
    """40 browsers that never read (posts hang) beside one healthy browser: once a hanging
    post times out, that connection waits in the slow gate, so the healthy one is served."""
    stalled = [f"stalled{i}" for i in range(40)]
    store = FakeStore({("appA", "x"): [*stalled, "healthy"]})
    poster = FakePoster()
    in_flight = {"now": 0, "max_after_first_timeouts": 0}
    loop = asyncio.get_running_loop()
    begun = loop.time()

    async def hang() -> None:
        in_flight["now"] += 1
        if loop.time() - begun > 0.3:  # after everyone's first timeout
            in_flight["max_after_first_timeouts"] = max(
                in_flight["max_after_first_timeouts"], in_flight["now"]
            )
        try:
            await asyncio.sleep(60)
        finally:
            in_flight["now"] -= 1

    for conn in stalled:
        poster.script[conn] = [hang] * 100  # type: ignore[list-item]
    policy = RetryPolicy(
        max_retries=2,
        base_seconds=0.01,
        max_seconds=0.02,
        post_timeout_seconds=0.1,
        slow_concurrency=3,
    )
    pub = publisher(store, poster, ["x"], policy=policy, drain=1.0)
    envelopes = stream(60)
    await publish(pub, envelopes, gap=0.01)
    assert_complete(poster.received["healthy"], text_of(envelopes))
    assert in_flight["max_after_first_timeouts"] <= 3
    assert pub.stats.failed == 40 and pub.stats.dropped >= 40


async def test_a_late_joiner_during_a_tool_wait_gets_the_waiting_calls_with_its_catch_up() -> None:
    store = FakeStore({("appA", "x"): ["early"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["x"], refresh=0.05)
    call = envelope(3, "llmToolCall", toolCallId="tc_1", toolName="pick", arguments={})
    await pub.start()
    for e in [
        envelope(0, "threadInfo", content={}),
        envelope(1),
        envelope(2, "function_call", content={}),
        call,
    ]:
        await pub.send(e)
    store.members_by_channel[("appA", "x")].append("late")
    await asyncio.sleep(0.2)
    await pub.send(envelope(4))  # the round moved on: later joiners get no pending calls
    store.members_by_channel[("appA", "x")].append("later")
    await asyncio.sleep(0.2)
    await pub.send(envelope(5, "end", finish_reason="stop"))
    await pub.close()
    first = poster.received["late"][0]
    assert first["type"] == "snapshot" and first["seq"] == 3
    assert first["pendingToolCalls"] == [{**call, "channel": "x"}]
    assert "pendingToolCalls" not in poster.received["later"][0]


async def test_waiting_calls_too_large_for_one_catch_up_are_left_out_and_counted() -> None:
    """Two waiting calls of ~60 KB each cannot ride one catch-up message (128 KB): the first
    does, the second is counted dropped, and every message posted still fits the limit."""
    store = FakeStore({("appA", "x"): ["early"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["x"], refresh=0.05)
    big = {"blob": "y" * 60_000}
    calls = [
        envelope(2 + i, "llmToolCall", toolCallId=f"tc_{i}", toolName="pick", arguments=big)
        for i in range(2)
    ]
    await pub.start()
    for e in [envelope(0, "threadInfo", content={}), envelope(1, content="z" * 50_000), *calls]:
        await pub.send(e)
    store.members_by_channel[("appA", "x")].append("late")
    await asyncio.sleep(0.2)
    await pub.send(envelope(4, "end", finish_reason="stop"))
    await pub.close()
    catch_up = [m for m in poster.received["late"] if m["type"] == "snapshot"]
    assert "".join(m["content"] for m in catch_up) == "z" * 50_000
    pending = [call for m in catch_up for call in m.get("pendingToolCalls", [])]
    assert [call["toolCallId"] for call in pending] == ["tc_0"]
    assert all(len(encode(m)) <= MAX_MESSAGE_BYTES for m in poster.received["late"])
    assert pub.stats.dropped == 1


async def test_a_connection_found_after_the_end_was_sent_gets_no_half_stream() -> None:
    """A tab found once `end` is out (the last membership read, then no more refreshes)
    must not get a catch-up saying "streaming" that no `end` follows (it would wait
    forever): it gets the text and the `end`, the stream whole, once."""
    store = FakeStore({("appA", "x"): ["early"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["x"], refresh=0.02)
    envelopes = stream(6)
    await pub.start()
    for e in envelopes:
        await pub.send(e)
    store.members_by_channel[("appA", "x")].append("after-end")
    await asyncio.sleep(0.15)  # several refresh periods while the final record is written
    await pub.close()
    assert_complete(poster.received["early"], text_of(envelopes))
    assert [m["type"] for m in poster.received["after-end"]] == ["snapshot", "end"]
    assert_complete(poster.received["after-end"], text_of(envelopes))
    assert (pub.stats.subscribers, pub.stats.catch_ups) == (2, 1)


class SlowClient:
    """boto3's management client, blocking `seconds[cid]` per post; counts every post."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.posts: dict[str, int] = {}
        self._lock = threading.Lock()

    def post_to_connection(self, *, ConnectionId: str, Data: bytes) -> None:
        time.sleep(self.seconds.get(ConnectionId, 0))
        with self._lock:
            self.posts[ConnectionId] = self.posts.get(ConnectionId, 0) + 1


async def test_a_post_waiting_for_a_free_thread_is_queued_not_timed_out() -> None:
    """One thread, two posts of 0.6 s each ahead of a third: the third waits 1.2 s for the
    thread, more than a post may take (0.1 s + the 1 s net), yet it is not slow. Counting
    the wait as post time would mark healthy tabs slow under fan-out and post them twice."""
    client = SlowClient({"c1": 0.6, "c2": 0.6})
    poster = BotoPoster(client, threads=1)  # type: ignore[arg-type]
    store = FakeStore({("appA", "x"): ["c1", "c2", "c3"]})
    policy = RetryPolicy(max_retries=3, base_seconds=0.001, post_timeout_seconds=0.1)
    pub = publisher(store, poster, ["x"], policy=policy)
    try:
        await publish(pub, [envelope(0, "end", finish_reason="stop")])
    finally:
        await poster.aclose()
    assert client.posts == {"c1": 1, "c2": 1, "c3": 1}  # each exactly once
    assert (pub.stats.posts, pub.stats.retries, pub.stats.failed) == (3, 0, 0)


@pytest.mark.parametrize("timeout", [0.5, 3.0, 10.0])
def test_a_boto3_post_gives_up_before_the_publisher_stops_waiting_for_it(timeout: float) -> None:
    """boto3's connect + read timeouts fit in POST_TIMEOUT_SECONDS, and the publisher's net
    is longer: it never retries a post whose thread may still deliver it."""
    endpoint = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/dev"
    config = aws.management_api("us-east-1", endpoint, timeout).meta.config
    assert config.connect_timeout + config.read_timeout <= timeout + 1e-9
    assert RetryPolicy(post_timeout_seconds=timeout).post_deadline_seconds > timeout


def test_every_post_thread_can_keep_a_pooled_connection() -> None:
    """BotoPoster runs up to POST_CONCURRENCY threads on one client: its pool must keep a
    connection for each, or the threads past the pool size reconnect (TLS) on every post."""
    endpoint = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/dev"
    as_the_service_makes_it = aws.management_api("us-east-1", endpoint, 3.0)
    assert as_the_service_makes_it.meta.config.max_pool_connections >= MAX_POST_CONCURRENCY
    sized = aws.management_api("us-east-1", endpoint, 3.0, pool_connections=200)
    assert sized.meta.config.max_pool_connections == 200


async def test_a_published_message_reports_what_reached_whom_once_delivery_is_over() -> None:
    store = FakeStore({("appA", "x"): ["ok", "refuses", "closed"], ("appB", "x"): ["rival"]})
    poster = FakePoster()
    poster.always["refuses"] = DeliveryRejected("forbidden", status=403)
    poster.script["closed"] = [ConnectionGone("gone")]
    pub = publisher(store, poster, ["x"])
    sent = message_envelope("msg_1", "onNote", {"progress": 1})
    delivery = await publish_message(pub, sent)
    assert delivery == Delivery("msg_1", subscribers=3, delivered=1, failed=1, gone=1)
    assert poster.received == {"ok": [{**sent, "channel": "x"}]}
    assert store.closed == ["closed"]


def test_a_message_that_cannot_fit_one_websocket_message_is_a_413() -> None:
    fits = message_envelope("msg_1", "a", "x" * (MAX_MESSAGE_BYTES - 200))
    check_size(fits, ["c"])
    with pytest.raises(PayloadTooLarge):
        check_size(fits, ["c" * 256])  # the label counts too: the longest channel decides


def test_the_size_counts_each_label_as_it_is_sent_json_escaped() -> None:
    """A channel of 255 `"` is shorter in UTF-8 than one of 256 letters, but takes 510
    bytes as a label: measured by the longest UTF-8 name, a message sized to fit with the
    letters passed the check and was then refused by the gateway, a delivery lost."""
    letters, quotes = "a" * 256, '"' * 255
    base = message_envelope("msg_1", "a", "")
    room = MAX_MESSAGE_BYTES - len(encode({**base, "channel": letters}))
    exact = message_envelope("msg_1", "a", "x" * room)
    assert len(encode({**exact, "channel": letters})) == MAX_MESSAGE_BYTES
    check_size(exact, [letters])
    with pytest.raises(PayloadTooLarge):
        check_size(exact, [letters, quotes])
    with pytest.raises(PayloadTooLarge):
        check_size(exact, [quotes, letters])


async def test_a_connection_back_after_its_lane_ended_counts_once_as_subscriber_and_failure() -> (
    None
):
    """`subscribers` counts connections posted to and `post_failures` connections that
    missed a message (docs/operations.md), not lanes: one that left, its lane done, and came
    back counted twice in each."""
    store = FakeStore({("appA", "x"): ["c1", "c2"]})
    poster = FakePoster()
    pub = publisher(store, poster, ["x"], refresh=0.01)
    envelopes = stream(30)
    await pub.start()
    poster.script["c1"] = [DeliveryRejected("403", status=403)]
    for e in envelopes[:10]:
        await pub.send(e)
    await asyncio.sleep(0.03)
    store.members_by_channel[("appA", "x")] = ["c2"]
    await asyncio.sleep(0.05)  # c1 left; its lane drained and ended
    store.members_by_channel[("appA", "x")] = ["c1", "c2"]
    await asyncio.sleep(0.05)  # back: a new lane, which starts with a catch-up
    poster.script["c1"] = [DeliveryRejected("403", status=403)]  # refused too
    for e in envelopes[10:]:
        await pub.send(e)
        await asyncio.sleep(0.001)
    await pub.close()
    assert (pub.stats.subscribers, pub.stats.failed) == (2, 1), pub.stats
    assert pub.stats.dropped >= 2
    assert text_of(poster.received["c2"]) == text_of(envelopes)


async def test_a_lagging_lane_joins_its_backlog_on_either_side_of_a_snapshot_never_across() -> None:
    """A page that resumed from the stored snapshot at seq S holds exactly the text up to S:
    a joined message from its lane that straddles S overlaps what it holds, and it must drop
    it and resume again, its text frozen until the lane catches up (decision 4)."""
    store = FakeStore({("appA", "x"): ["slow"]})
    poster = FakePoster()
    poster.delay["slow"] = 0.05
    pub = publisher(store, poster, ["x"])  # window 0: only the lane joins
    envelopes = stream(40)
    await pub.start()
    taken: list[int] = []
    for i, e in enumerate(envelopes):
        await pub.send(e)
        await asyncio.sleep(0.002)
        if i in (12, 20, 28):
            taken.append(pub.sent_so_far()[1])  # what the periodic snapshot stores
    await pub.close()
    received = poster.received["slow"]
    spans = [(m.get("firstSeq", m["seq"]), m["seq"]) for m in received]
    assert any(first < last for first, last in spans)  # the lane did join its backlog
    assert not [(f, s) for f, s in spans for seq in taken if f <= seq < s]
    assert text_of(received) == text_of(envelopes)


async def test_a_connection_slow_in_one_stream_waits_in_the_gate_in_the_next() -> None:
    """The slow mark lived on a stream's lane: tabs that never answer started every new
    stream unmarked, took the post slots again and held healthy tabs up a post timeout."""
    slow = SlowConnections(1)
    store = FakeStore({("appA", "x"): ["dead", "healthy"]})
    poster = FakePoster()
    poster.script["dead"] = [DeliveryUnreachable("no answer")] * (POLICY.max_retries + 1)
    first = publisher(store, poster, ["x"], slow=slow, drain=1)
    await publish(first, stream(3)[:1])
    assert "dead" in slow and "healthy" not in slow

    await slow.gate.acquire()  # every slow post now waits
    second = publisher(store, poster, ["x"], slow=slow)
    await second.start()
    poster.received.clear()
    for e in stream(4):
        await second.send(e)
    while len(poster.received.get("healthy", [])) < 3:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    assert "dead" not in poster.received  # it waits for the gate, the healthy tab does not
    slow.gate.release()
    await second.close()
    dead = poster.received["dead"]  # what waited in the gate, joined, all of it
    assert text_of(dead) == text_of(stream(4)) and dead[-1]["type"] == "end"
    assert "dead" not in slow  # a post got through: no longer slow
