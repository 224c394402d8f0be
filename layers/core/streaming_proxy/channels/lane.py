"""One connection's delivery lane: an ordered queue that merges its backlog when behind.

A lane posts one message at a time, so a connection sees its stream in `seq` order. When
posts fall behind the stream (a slow connection, throttling, retries, a busy process),
the next post takes every queued `delta` in a row (or every `thinking`) as one message:
`content` is their concatenation, `seq` the last seq covered and `firstSeq` the first.
A lane that keeps up sends each message as it was numbered; one that falls behind sends
fewer, larger messages instead of falling further behind. Seq stays the stream's own
numbering, so SSE, every channel and stored snapshots agree on it (docs/events.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from ..envelopes import MAX_CHAR_WIDTH, MAX_CONTENT_BYTES, encode, json_width
from ..observability import PublishStats

# Message types whose adjacent pieces may be joined: appending their text is the same
# whether it arrives in one message or several.
MERGEABLE = frozenset({"delta", "thinking"})
# A backlog longer than this is compacted as it grows, so a stalled lane stays small.
COMPACT_AT = 64


@dataclass
class Outgoing:
    """One message for every lane: the envelope, encoded once per channel label."""

    envelope: dict[str, Any]
    first_seq: int = -1
    _encoded: dict[str, bytes] = field(default_factory=dict)
    _width: int = -1

    def __post_init__(self) -> None:
        if self.first_seq < 0:
            self.first_seq = int(self.envelope["seq"])

    @property
    def seq(self) -> int:
        return int(self.envelope["seq"])

    @property
    def covers(self) -> int:
        """How many of the stream's seqs this message carries."""
        return self.seq - self.first_seq + 1

    @property
    def catch_up(self) -> bool:
        """A part of the snapshot that catches a late joiner up: it stands for every seq up
        to its own (a joiner that misses it misses all of them)."""
        return self.envelope.get("catchUp") is True

    @property
    def mergeable(self) -> bool:
        return self.envelope.get("type") in MERGEABLE

    @property
    def content_width(self) -> int:
        """Bytes `content` takes in the posted JSON: escapes make `"`, `\\n` and other control
        characters 2 to 6 bytes wide, so its UTF-8 length would undercount."""
        if self._width < 0:
            content = self.envelope.get("content", "")
            self._width = json_width(content) if isinstance(content, str) else 0
        return self._width

    def encoded(self, channel: str) -> bytes:
        """The message as posted to a connection that hears it through `channel` (its
        label wins over one the envelope was built with: a catch-up's)."""
        data = self._encoded.get(channel)
        if data is None:
            message = {"actionName": self.envelope.get("actionName"), "channel": channel}
            message.update(self.envelope)
            message["channel"] = channel
            if self.covers > 1:
                message["firstSeq"] = self.first_seq
            data = self._encoded[channel] = encode(message)
        return data


def merge(items: list[Outgoing]) -> Outgoing:
    """Adjacent messages of one mergeable type as one message spanning their seqs."""
    if len(items) == 1:
        return items[0]
    last = items[-1]
    content = "".join(str(item.envelope.get("content", "")) for item in items)
    return Outgoing({**last.envelope, "content": content}, first_seq=items[0].first_seq)


def _widest(message: Outgoing) -> int:
    """An upper bound of `content_width` that costs nothing to compute."""
    content = message.envelope.get("content", "")
    return len(content) * MAX_CHAR_WIDTH if isinstance(content, str) else 0


def take_next(queue: deque[Outgoing], barriers: Collection[int] = ()) -> tuple[Outgoing, int]:
    """Pop the next message to post, merged with what follows it when it can be, but never
    past a seq in `barriers` (a snapshot's: a join across it would overlap what a page that
    resumed from it holds).

    Returns the message and how many queued messages it replaced (1 = no merge).
    """
    head = queue.popleft()
    if not head.mergeable or not queue:
        return head, 1
    run = [head]
    # Exact JSON widths are only measured once the cheap bound could pass the limit.
    exact = False
    size = _widest(head)
    while queue:
        following = queue[0]
        same_kind = following.envelope.get("type") == head.envelope.get("type")
        if not same_kind or following.first_seq != run[-1].seq + 1 or run[-1].seq in barriers:
            break
        extra = following.content_width if exact else _widest(following)
        if size + extra > MAX_CONTENT_BYTES:
            if exact:
                break
            exact = True
            size = sum(item.content_width for item in run)
            extra = following.content_width
            if size + extra > MAX_CONTENT_BYTES:
                break
        run.append(queue.popleft())
        size += extra
    return merge(run), len(run)


def compact(queue: deque[Outgoing], barriers: Collection[int] = ()) -> int:
    """Merge every mergeable run in the queue in place; returns how many messages went."""
    before = len(queue)
    merged: deque[Outgoing] = deque()
    while queue:
        message, _ = take_next(queue, barriers)
        merged.append(message)
    queue.extend(merged)
    return before - len(queue)


Deliver = Callable[["Lane", Outgoing], Awaitable[bool]]
"""Posts one message for a lane; False when the lane must stop (the connection is gone)."""


class Lane:
    """One connection's ordered queue and the task that drains it."""

    def __init__(
        self,
        connection_id: str,
        channel: str,
        deliver: Deliver,
        stats: PublishStats,
        barriers: Collection[int] = (),
    ) -> None:
        self.connection_id = connection_id
        # Snapshot seqs no join of its backlog crosses (the publisher's, kept current).
        self._barriers = barriers
        # The label its messages carry, set at each post: the publisher keeps it current.
        self.channel = channel
        self.failed = False  # at least one message could not be delivered
        self._stats = stats
        self.in_flight: Outgoing | None = None
        # The highest seq already counted as missed with a lost catch-up snapshot.
        self._lost_up_to = -1
        self._deliver = deliver
        self._queue: deque[Outgoing] = deque()
        self._ready = asyncio.Event()
        self._finishing = False
        self.task = asyncio.create_task(self._run(), name=f"lane-{connection_id}")

    def put(self, message: Outgoing) -> None:
        self._queue.append(message)
        if len(self._queue) > COMPACT_AT:
            self._stats.merged += compact(self._queue, self._barriers)
        self._ready.set()

    def finish(self) -> None:
        """Deliver what is queued, then end."""
        self._finishing = True
        self._ready.set()

    def reopen(self) -> bool:
        """Take messages again after `finish` (the connection rejoined); False if ended."""
        if self.task.done():
            return False
        self._finishing = False
        return True

    @property
    def busy(self) -> bool:
        """A message is being posted or waits to be."""
        return self.in_flight is not None or bool(self._queue)

    def missed(self, message: Outgoing) -> int:
        """The seqs this connection misses when `message` is not delivered: those it carries;
        for a catch-up snapshot every seq up to its own, counted once whatever its parts."""
        if not message.catch_up:
            return message.covers
        missed = max(0, message.seq - self._lost_up_to)
        self._lost_up_to = max(self._lost_up_to, message.seq)
        return missed

    def undelivered(self) -> int:
        """Seqs queued or in flight (what a cancelled lane failed to deliver)."""
        held = [*([self.in_flight] if self.in_flight else []), *self._queue]
        return sum(self.missed(message) for message in held)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._finishing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            message, replaced = take_next(self._queue, self._barriers)
            self._stats.merged += replaced - 1
            self.in_flight = message
            keep_going = await self._deliver(self, message)
            self.in_flight = None
            if not keep_going:
                self._queue.clear()
                return
