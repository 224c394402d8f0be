"""Frontend (`ui_`) tool calls: registered for answers, then waited on cheaply.

An answer that lands in the process running the stream (`POST /llm/tool-response` on the
same instance) is handed over at once. Otherwise the wait polls the call's record with a
strongly consistent GetItem, backing off from 0.1 s to 1 s: a call answered after 2 s
costs 4 reads, a 90-second wait about 95 (each 1 read unit: the record is small). A call
that timed out is closed and read once more, for an answer that beat the close.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..blocking import BlockingCalls
from ..events import PlannedCall
from ..jobs import StreamJob
from ..observability import get_logger
from ..toolcalls import ToolCallRecord, ToolCallStore

FIRST_POLL_SECONDS = 0.1
MAX_POLL_SECONDS = 1.0


class LocalAnswers:
    """Answers for calls whose stream runs in this process, handed over without a read."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}

    def expect(self, app_id: str, call_id: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[(app_id, call_id)] = future
        return future

    def forget(self, app_id: str, call_id: str) -> None:
        self._waiting.pop((app_id, call_id), None)

    def deliver(self, app_id: str, call_id: str, answer: dict[str, Any]) -> bool:
        """Hand `answer` (already recorded) to a waiting stream here; False if none waits."""
        future = self._waiting.get((app_id, call_id))
        if future is None or future.done():
            return False
        future.set_result(answer)
        return True


class FrontendTools:
    """Opens, waits on and closes one app's frontend tool calls."""

    def __init__(self, store: ToolCallStore, db: BlockingCalls, local: LocalAnswers) -> None:
        self._store = store
        self._db = db
        self._local = local

    async def open(self, job: StreamJob, calls: list[PlannedCall]) -> None:
        """Record the calls before any browser hears of them, so every answer finds one."""
        records = [
            ToolCallRecord(job.app_id, c.id, job.stream_id, c.name, list(job.channels))
            for c in calls
        ]
        if records:
            await self._db(self._store.open, records)

    async def wait(self, app_id: str, call_id: str, within: float) -> dict[str, Any] | None:
        """The first answer, or None when `within` seconds passed without one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        handed = self._local.expect(app_id, call_id)
        interval = FIRST_POLL_SECONDS
        try:
            while (remaining := deadline - loop.time()) > 0:
                await asyncio.wait({handed}, timeout=min(interval, remaining))
                if handed.done():
                    return handed.result()
                answer = await self._read(app_id, call_id)
                if answer is not None:
                    return answer
                interval = min(MAX_POLL_SECONDS, interval * 2)
            return None
        finally:
            self._local.forget(app_id, call_id)

    async def settle(self, app_id: str, call_id: str) -> dict[str, Any] | None:
        """Close a call the wait gave up on, and read it once: an answer that landed after
        the last look was acknowledged to its sender, so it is the result, not a timeout."""
        await self._close(app_id, call_id)
        # The store's close does not say whether the call was still waiting: the read does.
        return await self._read(app_id, call_id)

    async def close(self, app_id: str, call_ids: list[str]) -> None:
        """Refuse answers from now on, all calls at once (best effort: the records expire)."""
        await asyncio.gather(*(self._close(app_id, call_id) for call_id in call_ids))

    async def _close(self, app_id: str, call_id: str) -> None:
        try:
            await self._db(self._store.close, app_id, call_id)
        except Exception:
            get_logger().warning("could not close a tool call", exc_info=True)

    async def _read(self, app_id: str, call_id: str) -> dict[str, Any] | None:
        try:
            record = await self._db(self._store.get, app_id, call_id)
        except Exception:  # a failed poll is one missed look; the next one may succeed
            get_logger().warning("tool answer poll failed", exc_info=True)
            return None
        if record is not None and record.status == "answered":
            return record.answer
        return None
