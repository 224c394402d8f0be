"""ChannelPublisher: fans a stream's messages out to every connection of its channels.

Membership is read once at start and refreshed on a timer, never per message. Each
connection has its own lane (queue + task) so order per connection is kept while posts
to different connections run concurrently and a slow or failing one delays no other.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from ..errors import ConnectionGone, DeliveryError
from ..observability import PublishStats, get_logger
from .poster import Poster
from .store import ConnectionStore

T = TypeVar("T")

_STOP = object()


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ChannelPublisher:
    """Delivers each envelope (with its `channel` filled in) to every member connection.

    A connection in several target channels gets each message once, labelled with the
    first of those channels in the request's order.
    """

    def __init__(
        self,
        *,
        store: ConnectionStore,
        poster: Poster,
        channels: Sequence[str],
        executor: Executor,
        refresh_seconds: float = 1.0,
        max_retries: int = 5,
        drain_seconds: float = 10.0,
        stream_id: str = "",
        stats: PublishStats | None = None,
    ) -> None:
        self._store = store
        self._poster = poster
        self._channels = list(dict.fromkeys(channels))
        self._executor = executor
        self._refresh_seconds = refresh_seconds
        self._max_retries = max_retries
        self._drain_seconds = drain_seconds
        self._stream_id = stream_id
        self.stats = stats or PublishStats()
        self._lanes: dict[str, _Lane] = {}
        self._gone: set[str] = set()
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read membership and begin refreshing it in the background."""
        await self._refresh()
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def send(self, envelope: dict[str, Any]) -> None:
        """Queue one message for every member; returns without waiting for any post."""
        encoded = {channel: encode(_with_channel(envelope, channel)) for channel in self._channels}
        for lane in self._lanes.values():
            lane.put(encoded[lane.channel])

    async def close(self) -> None:
        """Stop refreshing, let every lane deliver what it holds (bounded by the drain time)."""
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        for lane in self._lanes.values():
            lane.put(_STOP)
        tasks = [lane.task for lane in self._lanes.values()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._drain_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def member_count(self) -> int:
        return len(self._lanes)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self._refresh()
            except Exception:  # a failed refresh keeps the last known membership
                get_logger().warning(
                    "membership refresh failed", extra={"stream_id": self._stream_id}, exc_info=True
                )

    async def _refresh(self) -> None:
        found = await asyncio.gather(
            *(self._run(self._store.members, channel) for channel in self._channels)
        )
        current: dict[str, str] = {}
        for channel, members in zip(self._channels, found, strict=True):
            for connection_id in members:
                current.setdefault(connection_id, channel)
        for connection_id, channel in current.items():
            if connection_id not in self._lanes and connection_id not in self._gone:
                self._lanes[connection_id] = _Lane(connection_id, channel, self._deliver)
        for connection_id in list(self._lanes):
            if connection_id not in current:
                self._lanes.pop(connection_id).put(_STOP)

    async def _deliver(self, connection_id: str, data: bytes) -> bool:
        """Post one message with bounded, jittered retries; False once the connection is gone."""
        for attempt in range(self._max_retries + 1):
            try:
                await self._poster.post(connection_id, data)
                self.stats.posts += 1
                return True
            except ConnectionGone:
                self.stats.gone += 1
                self._gone.add(connection_id)
                self._lanes.pop(connection_id, None)
                await self._forget(connection_id)
                return False
            except DeliveryError as e:
                if not e.retryable:
                    get_logger().warning(
                        "post failed",
                        extra={
                            "stream_id": self._stream_id,
                            "connection_id": connection_id,
                            "error": str(e),
                        },
                    )
                    break
                if attempt == self._max_retries:
                    break
                self.stats.retries += 1
                await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))  # noqa: S311
        self.stats.failed += 1
        return True

    async def _forget(self, connection_id: str) -> None:
        try:
            await self._run(self._store.close, connection_id)
        except Exception:
            get_logger().warning(
                "could not delete a gone connection",
                extra={"stream_id": self._stream_id, "connection_id": connection_id},
                exc_info=True,
            )

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


class _Lane:
    """One connection's ordered queue and the task that drains it."""

    def __init__(
        self,
        connection_id: str,
        channel: str,
        deliver: Callable[[str, bytes], Any],
    ) -> None:
        self.connection_id = connection_id
        self.channel = channel
        self._deliver = deliver
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.task = asyncio.create_task(self._drain())

    def put(self, item: object) -> None:
        self._queue.put_nowait(item)

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, bytes)
            if not await self._deliver(self.connection_id, item):
                return


def _with_channel(envelope: dict[str, Any], channel: str) -> dict[str, Any]:
    return {"actionName": envelope.get("actionName"), "channel": channel, **envelope}
