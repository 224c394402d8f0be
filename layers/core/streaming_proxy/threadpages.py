"""Pages of a thread's messages: for its app (`GET /threads/{id}/messages`) and for a page
holding a subscribe token for a channel the thread's runs published to (the WebSocket
`history` action), whose reply is split to fit the WebSocket message limit."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .envelopes import MAX_SNAPSHOT_MESSAGE_BYTES, snapshot_messages
from .history import Messages, json_lines
from .tablekeys import now_epoch
from .threads import ThreadMeta, ThreadStore, thread_not_found

__all__ = ["MAX_PAGE", "ThreadPage", "history_replies", "read_page"]

# Messages in one page, at most (either way in).
MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class ThreadPage:
    thread_id: str
    meta: ThreadMeta
    messages: Messages
    cursor: int
    next_cursor: str | None

    def about(self) -> dict[str, Any]:
        """What a page says of its thread besides the messages."""
        active = self.meta.active_run if self.meta.busy(now_epoch()) else None
        return {
            "threadId": self.thread_id,
            "createdAt": self.meta.created_at,
            "updatedAt": self.meta.updated_at,
            "activeRun": active,
            "nextCursor": self.next_cursor,
        }


def read_page(
    threads: ThreadStore,
    app_id: str,
    thread_id: str,
    cursor: int,
    limit: int,
    channels: Collection[str] | None = None,
) -> ThreadPage:
    """Up to `limit` messages of the app's thread from message number `cursor` on, oldest
    first, reading only the runs that hold them (blocking). With `channels` (a page's), a
    thread that never published to one of them is not found, as another app's is."""
    meta = threads.meta(app_id, thread_id)
    if meta is None or (channels is not None and not threads.published_to(app_id, meta, channels)):
        raise thread_not_found(thread_id)
    page = threads.page(app_id, meta, cursor, limit)
    more = None if page.next_cursor is None else str(page.next_cursor)
    return ThreadPage(thread_id, meta, page.messages, cursor, more)


def history_replies(
    page: ThreadPage, max_bytes: int = MAX_SNAPSHOT_MESSAGE_BYTES
) -> list[dict[str, Any]]:
    """The `history` reply: the page's messages as JSON Lines in `content`, cut in
    `part`/`parts` (as a snapshot is) when one WebSocket message cannot hold them; `cursor`
    says which page it answers."""
    base = {"type": "history", **page.about(), "cursor": str(page.cursor)}
    base["count"] = len(page.messages)
    return snapshot_messages(base, json_lines(page.messages), max_bytes)
