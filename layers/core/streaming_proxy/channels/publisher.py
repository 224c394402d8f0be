"""ChannelPublisher: fans a stream's messages out to every connection of its channels.

Membership is read once at start and refreshed on a timer (never per message) until the
stream's `end` is sent. A connection's private channel (`tab|<id>`) is read at start only:
no other connection can ever join it, so a refresh could find nothing new (a refresh is an
eventually consistent Query, half a read unit a channel a second).

Text messages are held over the coalescing window (coalescer.py) and go out joined; the
window widens while the connections cannot keep up. Each connection has its own lane
(lane.py) so order per connection is kept while posts to different connections run
concurrently, and a slow or failing one delays no other.

Nothing is lost silently. Throttling, 5xx answers, timeouts and connection errors are
retried with jittered backoff; a lane that falls behind merges its backlog; a connection
that joins mid-stream first gets a catch-up snapshot of exactly the text so far. Whatever
still cannot be delivered (retries exhausted, or still queued when the drain time is up)
is counted in `dropped` (seqs) and `failed` (connections) and logged; a connection that
is gone (410) is counted in `gone` and its rows are deleted.

One slow connection must not slow the others: a connection whose post got no answer in
time (a browser that does not read, a dying network) is marked slow, and slow connections
share a small gate (a quarter of the post concurrency) until one of their posts succeeds
again, so they can never hold every thread or pooled connection the healthy ones need.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from ..blocking import BlockingCalls
from ..envelopes import LAST_TYPES, encode, fitted_function_call, snapshot_messages
from ..errors import ConnectionGone, DeliveryError, DeliveryUnreachable
from ..observability import PublishStats, get_logger
from .coalescer import Coalescer
from .lane import Lane, Outgoing
from .names import is_private
from .poster import Poster
from .store import ConnectionStore

# Snapshot seqs a lane's joins stay clear of: a snapshot a second, so a lane this many
# seconds behind may join across an older one (a page that resumed from it then drops the
# join and resumes again: nothing lost).
MAX_BARRIERS = 64

# What the waiting calls may take of a catch-up snapshot (envelopes.py holds one snapshot
# message to 120,000 bytes): one call of the largest size a page is sent (tools/messages.py),
# and the text still gets ~20 KB a part.
PENDING_CALLS_BYTES = 100_000


class SlowConnections:
    """The connections of a process whose last post got no answer in time, and the gate
    their posts share: remembered across streams (one stream's lanes are new), until one of
    their posts succeeds. At most `remembered` of them, the oldest forgotten first."""

    def __init__(self, concurrency: int, remembered: int = 10_000) -> None:
        self.gate = asyncio.Semaphore(concurrency)
        self._ids: dict[str, None] = {}
        self._remembered = remembered

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._ids

    def remember(self, connection_id: str) -> None:
        self._ids[connection_id] = None
        if len(self._ids) > self._remembered:
            del self._ids[next(iter(self._ids))]

    def forget(self, connection_id: str) -> None:
        self._ids.pop(connection_id, None)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for one post: `max_retries` after the first attempt, each after a
    jittered wait that doubles from `base_seconds` up to `max_seconds`."""

    max_retries: int = 5
    base_seconds: float = 0.05
    max_seconds: float = 1.0
    post_timeout_seconds: float = 3.0
    # How many posts to connections marked slow may be in flight at once, per process.
    slow_concurrency: int = 8

    @property
    def post_deadline_seconds(self) -> float:
        """The publisher's own limit on one post, counted once the post holds a slot.

        Invariant: a poster gives up within `post_timeout_seconds` (boto3's connect + read
        timeouts add up to it: aws.management_api), so this net, a second longer, fires
        only for a poster that does not bound its posts. Were it shorter, a post's thread
        could still deliver after the publisher had timed it out and retried: twice.
        """
        return self.post_timeout_seconds + 1

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_seconds, self.base_seconds * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311


class ChannelPublisher:
    """Delivers each envelope (with its `channel` filled in) to every member connection of
    one app's channels.

    A connection in several target channels gets each message once, labelled with the
    first of those channels in the request's order that it is in when the message is
    posted (as the last membership read found it): a page that leaves one of them and
    stays in another is told the channel it still hears the stream through.
    """

    def __init__(
        self,
        *,
        store: ConnectionStore,
        poster: Poster,
        db: BlockingCalls,
        app_id: str,
        channels: Sequence[str],
        stream_id: str = "",
        refresh_seconds: float = 1.0,
        retry: RetryPolicy | None = None,
        drain_seconds: float = 10.0,
        stats: PublishStats | None = None,
        slow: SlowConnections | None = None,
        window_seconds: float = 0.0,
        max_window_seconds: float | None = None,
    ) -> None:
        self._store = store
        self._poster = poster
        self._db = db
        self._app_id = app_id
        self._channels = list(dict.fromkeys(channels))
        self._refresh_seconds = refresh_seconds
        self._retry = retry or RetryPolicy()
        self._drain_seconds = drain_seconds
        self.stats = stats or PublishStats()
        self._lanes: dict[str, Lane] = {}
        self._retired: set[Lane] = set()  # left the channels: delivering what they hold
        self._gone: set[str] = set()
        # The seqs of the latest snapshots taken (`sent_so_far`): a page that resumed from
        # one gets its lane's backlog joined up to it and from the next seq on, so the
        # first live message it gets neither overlaps nor leaves a gap.
        self._barriers: deque[int] = deque(maxlen=MAX_BARRIERS)
        # Connections posted to, and those that missed a message: counted once each, however
        # many lanes a connection had (it may leave, its lane end, and come back).
        self._served: set[str] = set()
        self._missed: set[str] = set()
        self._slow = slow or SlowConnections(self._retry.slow_concurrency)
        self._cleanups: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None  # the read after `end`
        self._fixed: dict[str, list[str]] = {}  # private channels' members, read at start
        self._members: dict[str, list[str]] = {}
        self._coalescer = Coalescer(window_seconds, max_window_seconds)
        self.stats.window_ms = max(self.stats.window_ms, round(window_seconds * 1000))
        self._flush_timer: asyncio.TimerHandle | None = None
        # What a connection joining mid-stream needs to catch up: the text sent so far.
        self._text: list[str] = []
        self._last: dict[str, Any] | None = None
        self._waiting_calls: list[dict[str, Any]] = []
        self._log = {"stream_id": stream_id}

    async def start(self) -> None:
        """Read membership (raising if it cannot) and begin refreshing it."""
        await self._refresh()
        self._fixed = {
            channel: members for channel, members in self._members.items() if is_private(channel)
        }
        if len(self._fixed) < len(self._channels):
            self._refresher = asyncio.create_task(self._refresh_forever())

    async def send(self, envelope: dict[str, Any]) -> None:
        """Queue one message for every member (text waits for its window); returns without
        waiting for any post."""
        loop = asyncio.get_running_loop()
        if envelope.get("type") == "function_call":  # the SSE caller gets every argument
            envelope = fitted_function_call(envelope)
        ready = self._coalescer.push(Outgoing(envelope), loop.time())
        for message in ready:
            self._dispatch(message)
        if self._coalescer.flush_at is not None and self._flush_timer is None:
            self._flush_timer = loop.call_at(self._coalescer.flush_at, self._flush_due)

    def sent_so_far(self) -> tuple[str, int]:
        """The text and last seq handed to the connections (what a snapshot may say: a
        joined message never straddles it: the window's joins are made before, and a lane
        behind joins its backlog on either side of it, never across: `barriers`)."""
        seq = -1 if self._last is None else int(self._last["seq"])
        if seq >= 0 and (not self._barriers or self._barriers[-1] != seq):
            self._barriers.append(seq)
        return "".join(self._text), seq

    def _flush_due(self) -> None:
        self._flush_timer = None
        # Connections still busy with earlier messages as the next batch falls due: the
        # poster is behind at this rate, so the window widens (fewer, larger messages).
        self._coalescer.adapt(self._behind())
        for message in self._coalescer.drain():
            self._dispatch(message)
        self.stats.window_ms = max(self.stats.window_ms, round(self._coalescer.window * 1000))

    def _behind(self) -> bool:
        """Whether more than a tenth of the healthy connections have messages waiting
        (a slow or failing one is not counted: it must not widen everyone's window)."""
        healthy = [
            lane
            for lane in self._lanes.values()
            if lane.connection_id not in self._slow and not lane.failed
        ]
        busy = sum(1 for lane in healthy if lane.busy)
        return busy * 10 > len(healthy)

    def _dispatch(self, message: Outgoing) -> None:
        """Hand one numbered (possibly joined) message to every lane."""
        envelope = message.envelope
        kind = envelope.get("type")
        if kind == "delta":
            self._text.append(str(envelope.get("content", "")))
        # The stream waits on the frontend calls it sent last; anything after them means the
        # round moved on (the model answers only once every call of a round has its result).
        if kind == "llmToolCall":
            self._waiting_calls.append(envelope)
        else:
            self._waiting_calls = []
        self._last = envelope
        for lane in self._lanes.values():
            lane.put(message)
        if kind in LAST_TYPES:
            # Membership stops here; the open lanes go on delivering. A tab that subscribes
            # from now on learns the end from `resume`: the relay wrote the final record
            # before handing us `end` (relay.Relay._end). One that subscribed since the last
            # refresh may have resumed before that write (`streaming`) and would wait for an
            # `end` no lane carries: one last read finds it (`_sweep`).
            self._stop_refreshing()
            if kind == "end" and self._refresher is not None:
                self._sweeping = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        """Stop refreshing, let every lane deliver what it holds within the drain time,
        then count what is still undelivered."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for message in self._coalescer.drain():
            self._dispatch(message)
        self._stop_refreshing()
        pending = [task for task in (self._refresher, self._sweeping) if task is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        lanes = [*self._lanes.values(), *self._retired]
        for lane in lanes:
            lane.finish()
        if lanes:
            await asyncio.wait([lane.task for lane in lanes], timeout=self._drain_seconds)
        for lane in lanes:
            if not lane.task.done():
                lane.task.cancel()
                self._count_failure(lane, lane.undelivered(), "still undelivered at drain time")
        await asyncio.gather(*(lane.task for lane in lanes), return_exceptions=True)
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=self._drain_seconds)
        if self.stats.failed:
            get_logger().warning(
                "some subscribers could not be served",
                extra={**self._log, "failed": self.stats.failed, "dropped": self.stats.dropped},
            )

    # -- membership ------------------------------------------------------------------------

    def _stop_refreshing(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self._refresh()
            except Exception:  # a failed refresh keeps the last known membership
                get_logger().warning("membership refresh failed", extra=self._log, exc_info=True)

    async def _sweep(self) -> None:
        """Membership read once more after `end`: a tab that joined since the last refresh
        gets the stream's text and its `end` (`_catch_up`)."""
        try:
            await self._refresh()
        except Exception:
            get_logger().warning("last membership read failed", extra=self._log, exc_info=True)

    async def _refresh(self) -> None:
        channels = [channel for channel in self._channels if channel not in self._fixed]
        found = await asyncio.gather(
            *(self._db(self._store.members, self._app_id, channel) for channel in channels)
        )
        self._members = {**self._fixed, **dict(zip(channels, found, strict=True))}
        current: dict[str, str] = {}
        for channel in self._channels:
            for connection_id in self._members[channel]:
                current.setdefault(connection_id, channel)
        for connection_id, channel in current.items():
            lane = self._lanes.get(connection_id)
            if lane is not None:
                lane.channel = channel  # the same lane (order holds), its label up to date
            elif connection_id not in self._gone:
                self._open_lane(connection_id, channel)
        for connection_id in [c for c in self._lanes if c not in current]:
            lane = self._lanes.pop(connection_id)
            lane.finish()
            self._retired.add(lane)

    def _open_lane(self, connection_id: str, channel: str) -> None:
        # A connection that left and rejoined keeps its lane (one lane each: order holds).
        lane = next(
            (old for old in self._retired if old.connection_id == connection_id and old.reopen()),
            None,
        )
        if lane is not None:
            self._retired.discard(lane)
            lane.channel = channel  # it may have come back through another channel
        else:
            lane = Lane(connection_id, channel, self._deliver, self.stats, self._barriers)
            if connection_id not in self._served:
                self._served.add(connection_id)
                self.stats.subscribers += 1
        self._lanes[connection_id] = lane
        if self._last is not None:
            # Joined mid-stream: first exactly the text so far, then live from the next seq.
            for part in self._catch_up(channel):
                lane.put(Outgoing(part))
            self.stats.catch_ups += 1

    def _catch_up(self, channel: str) -> list[dict[str, Any]]:
        """The text so far as a snapshot at the last seq; after `end` (`_sweep`), the text
        as of the seq before it, then that `end`."""
        last = self._last
        assert last is not None
        if last.get("type") == "end":
            before = {**last, "seq": last["seq"] - 1}
            text = self._snapshot(channel, before) if before["seq"] >= 0 else []
            return [*text, last]
        return self._snapshot(channel, last)

    def _snapshot(self, channel: str, last: dict[str, Any]) -> list[dict[str, Any]]:
        # `channel` sizes the parts; each is labelled when posted (Outgoing.encoded), as live
        # messages are, so a lane relabelled meanwhile labels its catch-up too.
        base = {
            "actionName": last.get("actionName"),
            "channel": channel,
            "streamId": last.get("streamId"),
            "seq": last["seq"],
            "type": "snapshot",
            "status": "streaming",
            "catchUp": True,  # pushed, not the answer to a resume
        }
        if self._waiting_calls:
            # A tab joining while the stream waits for a page must still be able to answer.
            pending = self._pending_calls(channel)
            if pending:
                base["pendingToolCalls"] = pending
        return snapshot_messages(base, "".join(self._text))

    def _pending_calls(self, channel: str) -> list[dict[str, Any]]:
        """The waiting calls for a catch-up, as many as fit one; the rest are counted
        dropped (the joining tab cannot answer them; the tabs that saw them live can)."""
        pending: list[dict[str, Any]] = []
        size = 0
        for call in self._waiting_calls:
            entry = {"actionName": call.get("actionName"), "channel": channel, **call}
            size += len(encode(entry))
            if size > PENDING_CALLS_BYTES:
                break
            pending.append(entry)
        left_out = len(self._waiting_calls) - len(pending)
        if left_out:
            self.stats.dropped += left_out
            get_logger().warning(
                "waiting tool calls left out of a catch-up: too large",
                extra={**self._log, "left_out": left_out},
            )
        return pending

    # -- delivery --------------------------------------------------------------------------

    async def _deliver(self, lane: Lane, message: Outgoing) -> bool:
        """Post one message with bounded, jittered retries; False once the lane must stop."""
        data = message.encoded(lane.channel)
        retry = self._retry
        for attempt in range(retry.max_retries + 1):
            try:
                await self._post(lane, data)
                self._slow.forget(lane.connection_id)
                self.stats.posts += 1
                return True
            except ConnectionGone:
                self._on_gone(lane)
                return False
            except (DeliveryError, TimeoutError) as e:
                error = e if isinstance(e, DeliveryError) else DeliveryUnreachable("post timed out")
                if isinstance(error, DeliveryUnreachable):
                    self._slow.remember(lane.connection_id)
                if not error.retryable or attempt == retry.max_retries:
                    self._count_failure(lane, lane.missed(message), error.message)
                    return True  # the next message may get through; the browser resumes
                self.stats.retries += 1
                await asyncio.sleep(retry.delay(attempt))
            except Exception as e:  # a poster bug must not kill the lane
                get_logger().exception("post raised unexpectedly", extra=self._log)
                self._count_failure(lane, lane.missed(message), type(e).__name__)
                return True
        return True

    async def _post(self, lane: Lane, data: bytes) -> None:
        # Waiting in the slow gate or for one of the poster's workers (a thread, a pooled
        # connection) is queueing, not slowness: the clock starts once a slot is ours. Else
        # a large fan-out would mark healthy tabs slow and retry posts still under way.
        slow = lane.connection_id in self._slow  # here or in an earlier stream
        gate: AbstractAsyncContextManager[None] = self._slow.gate if slow else nullcontext()
        async with gate, self._poster.slots:
            async with asyncio.timeout(self._retry.post_deadline_seconds):
                await self._poster.post(lane.connection_id, data)

    def _count_failure(self, lane: Lane, seqs: int, why: str) -> None:
        self.stats.dropped += seqs
        lane.failed = True
        if lane.connection_id not in self._missed:
            self._missed.add(lane.connection_id)
            self.stats.failed += 1
        get_logger().warning(
            "message not delivered",
            extra={**self._log, "connection_id": lane.connection_id, "seqs": seqs, "why": why},
        )

    def _on_gone(self, lane: Lane) -> None:
        self.stats.gone += 1
        self._gone.add(lane.connection_id)
        if self._lanes.get(lane.connection_id) is lane:
            del self._lanes[lane.connection_id]
        task = asyncio.create_task(self._forget(lane.connection_id))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _forget(self, connection_id: str) -> None:
        try:
            await self._db(self._store.close, connection_id)
        except Exception:
            get_logger().warning(
                "could not delete a gone connection",
                extra={**self._log, "connection_id": connection_id},
                exc_info=True,
            )
