"""ThreadStore: an app's conversation threads and their runs, in the single table.

One partition per thread (`tablekeys.thread_pk`): `META` (times, counters, the active run's
lease), `MSG#<n>` items holding the messages as JSON Lines (history.py), an `INDEX#<number>`
entry per run (where its messages start: threadreads.py reads a part at a time), and
`RUN#<id>` per run (its stream and status, for stop), and a `CHAN#<channel>` item per channel a
run published to (a page on one may read the thread). A run holds the thread by a lease on META: a
conditional write takes it when no run holds it or the holder's lease expired (a crashed
run never locks a thread for good); its messages land in one transaction with the release.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import threadreads
from .errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from .history import ITEM_CHARS, Messages, json_lines, pack
from .ids import THREAD_ID
from .tablekeys import (
    META,
    MSG,
    RUN,
    STREAM,
    batch_write,
    expired,
    now_epoch,
    query_items,
    thread_key,
    thread_pk,
)
from .threadreads import Page, Recent
from .threadwrites import (
    CHANNEL_SK,
    CHANNELS_IN_TAKE,
    RunStart,
    RunStatus,
    append,
    channel_items,
    take,
)
from .transactions import transact

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "MAX_NEW_CHARS",
    "THREAD_ID",
    "Page",
    "Recent",
    "RunRecord",
    "RunStart",
    "RunStatus",
    "ThreadMeta",
    "ThreadStore",
    "check_storable",
    "check_unmarked",
    "new_run_id",
    "new_thread_id",
    "thread_not_found",
]

# One transaction holds at most 100 items and 4 MB: the run's items stay well inside.
MAX_ITEMS_PER_RUN = 48
# A run's new messages may take half of that, at most: the rest is its answer's and tool
# rounds'.
MAX_NEW_CHARS = MAX_ITEMS_PER_RUN * ITEM_CHARS // 2


# META's `activeRun` while the thread is being erased: no run id looks like it.
ERASING = "erasing"


def new_thread_id() -> str:
    return "thread_" + secrets.token_urlsafe(18)


def new_run_id() -> str:
    return "run_" + secrets.token_urlsafe(18)


def check_storable(messages: Messages) -> None:
    """PayloadTooLarge (413) when a run's new messages take more than MAX_NEW_CHARS as
    stored (ASCII-escaped: a non-ASCII character takes 6 characters, an emoji 12), so that
    a run is refused before it starts rather than holding a thread it cannot write to."""
    size = len(json_lines(messages))
    if size > MAX_NEW_CHARS:
        raise PayloadTooLarge(
            f"the new messages take {size} characters stored in a thread (JSON, non-ASCII "
            f"characters escaped), more than a run may add: at most {MAX_NEW_CHARS}"
        )


def check_unmarked(messages: Messages) -> None:
    """ValidationFailed (400) for a new message that sets `status`: in a thread that field
    is the proxy's own mark on an answer that did not end well (failed, cancelled), which
    later runs read to leave such an empty answer out; a caller's would be taken for it."""
    where = [f"payload.messages.{i}.status" for i, m in enumerate(messages) if "status" in m]
    if where:
        problem = "a message in a thread may not set status: the proxy marks its answers so"
        raise ValidationFailed(
            f"invalid request: {where[0]}: {problem}",
            fields=[{"field": field, "message": problem} for field in where],
        )


def thread_not_found(thread_id: str) -> NotFound:
    return NotFound(f"thread {thread_id} not found")


@dataclass(frozen=True, slots=True)
class ThreadMeta:
    thread_id: str
    created_at: int
    updated_at: int
    message_count: int
    active_run: str | None
    lease_until: int
    # Every channel a run of the thread published to, on a thread stored before channels
    # were items of their own (`published_to` reads those).
    channels: frozenset[str] = frozenset()
    # The number of the thread's next message item (None on a thread whose runs were all
    # stored before META kept it: then the newest item is read).
    next_item: int | None = None

    def busy(self, now: int) -> bool:
        return self.active_run is not None and self.lease_until >= now


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    stream_id: str
    status: RunStatus


class ThreadStore:
    """Reads and writes threads; all methods are blocking (call them via the DB pool)."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    def meta(self, app_id: str, thread_id: str) -> ThreadMeta | None:
        """The thread's META; None when absent, past its TTL (DynamoDB deletes expired
        items late) or when a delete took it (gone to every reader and run from then on,
        even while a delete cut short leaves its items)."""
        item = self._db.get_item(
            TableName=self._table, Key=thread_key(app_id, thread_id), ConsistentRead=True
        ).get("Item")
        if item is None or expired(item) or item.get("activeRun", {}).get("S") == ERASING:
            return None
        return _meta(thread_id, item)

    def start_run(self, app_id: str, start: RunStart) -> None:
        """Take the thread for a run (creating it when `start.new`): Conflict (409) while
        another run holds it, NotFound when it does not exist (or is another app's)."""
        now = now_epoch()
        # False: META's condition (the lease) did not hold.
        if transact(self._db, self._table, take(app_id, start, now)):
            self._more_channels(app_id, start, now)
            return
        if self.meta(app_id, start.thread_id) is None:
            raise thread_not_found(start.thread_id)
        raise Conflict(
            f"thread {start.thread_id} has a run in progress; wait for its end or stop it "
            "(POST /stream/create/assistants/stop)"
        )

    def _more_channels(self, app_id: str, start: RunStart, now: int) -> None:
        """The run's channel items the take's transaction had no room for; the thread is
        released when they cannot be written (the run is refused: nothing held)."""
        rest = channel_items(app_id, start, now)[CHANNELS_IN_TAKE:]
        if not rest:
            return
        try:
            batch_write(self._db, self._table, ({"PutRequest": {"Item": i}} for i in rest))
        except Exception:
            self.finish_run(app_id, start, [], "failed")
            raise

    def published_to(self, app_id: str, meta: ThreadMeta, channels: Collection[str]) -> bool:
        """Whether a run of the thread published to one of `channels` (its live `CHAN#`
        items, read until one is found; or META's set, on a thread stored before them)."""
        if not meta.channels.isdisjoint(channels):
            return True
        now = now_epoch()
        items = query_items(
            self._db,
            TableName=self._table,
            ConsistentRead=True,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :chan)",
            ProjectionExpression="sk, expiresAt",
            ExpressionAttributeValues={
                ":pk": thread_pk(app_id, meta.thread_id),
                ":chan": {"S": CHANNEL_SK},
            },
        )
        return any(
            item["sk"]["S"].removeprefix(CHANNEL_SK) in channels and not expired(item, now)
            for item in items
        )

    def finish_run(
        self, app_id: str, start: RunStart, messages: Messages, status: RunStatus
    ) -> bool:
        """Append the run's messages and release the thread, in one transaction; False when
        the run no longer holds it (its lease expired and another run took it, or the thread
        was deleted): then nothing is written."""
        meta = self.meta(app_id, start.thread_id)
        if meta is None or meta.active_run != start.run_id:
            return False
        datas = pack(messages)
        if len(datas) > MAX_ITEMS_PER_RUN:
            raise PayloadTooLarge("the run's messages are too large to store in its thread")
        first = meta.next_item
        if first is None:
            first = _next_item(self._db, self._table, app_id, start.thread_id)
        # Only the lease holder appends, so META's count is the number of its first message.
        actions = append(
            app_id,
            start,
            datas,
            len(messages),
            status,
            first,
            now_epoch(),
            meta.message_count,
        )
        return transact(self._db, self._table, actions)

    def recent(self, app_id: str, thread_id: str, shortfall: Callable[[Messages], int]) -> Recent:
        """The thread's newest whole runs within their TTL, oldest first, read newest first
        until `shortfall` of the messages read is 0 (history.shortfall)."""
        pk = thread_pk(app_id, thread_id)
        return threadreads.recent(self._db, self._table, pk, shortfall, now_epoch())

    def page(self, app_id: str, meta: ThreadMeta, cursor: int, limit: int) -> Page:
        """Up to `limit` of the thread's messages numbered `cursor` on, reading only the runs
        that hold them."""
        pk = thread_pk(app_id, meta.thread_id)
        args = (cursor, limit, meta.message_count, now_epoch())
        return threadreads.page(self._db, self._table, pk, *args)

    def run(self, app_id: str, thread_id: str, run_id: str) -> RunRecord | None:
        item = self._db.get_item(
            TableName=self._table,
            Key=thread_key(app_id, thread_id, RUN + run_id),
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None
        status: Any = item["status"]["S"]
        return RunRecord(run_id, item["streamId"]["S"], status)

    def delete(self, app_id: str, thread_id: str) -> None:
        """Erase the thread: META is first marked as held by the erase, on condition that no
        run holds it (one write, so no run can take the thread between the check and the
        erase; from then on the thread is not found: `meta`); then its runs' streams (record
        and text: what a page's `resume` reads back) and every item of the thread are
        deleted, META last, so a delete cut short is simply sent again. NotFound when
        absent; Conflict while a run holds it (stop the run first)."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=thread_key(app_id, thread_id),
                UpdateExpression="SET activeRun = :erasing, leaseUntil = :forever",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(activeRun)"
                " OR leaseUntil < :now OR activeRun = :erasing)",
                ExpressionAttributeValues={
                    ":erasing": {"S": ERASING},
                    ":forever": {"N": str(2**40)},
                    ":now": {"N": str(now_epoch())},
                },
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            if self.meta(app_id, thread_id) is None:
                raise thread_not_found(thread_id) from None
            raise Conflict(
                f"thread {thread_id} has a run in progress; stop it, then delete"
            ) from None
        items = self._items(thread_pk(app_id, thread_id), "pk, sk, streamId")
        # What each run streamed (its record and text, which a page's `resume` reads) goes
        # first: the runs' items name those streams, so an erase cut short still finds them.
        streams = [{"S": STREAM + i["streamId"]["S"]} for i in items if "streamId" in i]
        keys = [{"pk": i["pk"], "sk": i["sk"]} for pk in streams for i in self._items(pk)]
        batch_write(self._db, self._table, ({"DeleteRequest": {"Key": k}} for k in keys))
        keys = [{"pk": i["pk"], "sk": i["sk"]} for i in items]
        for last in (False, True):
            erase = ({"DeleteRequest": {"Key": k}} for k in keys if (k["sk"]["S"] == META) == last)
            batch_write(self._db, self._table, erase)

    def _items(self, pk: dict[str, Any], projection: str = "pk, sk") -> list[dict[str, Any]]:
        """Every item of the partition `pk`, with the attributes `projection` names."""
        items = query_items(
            self._db,
            TableName=self._table,
            ConsistentRead=True,
            KeyConditionExpression="pk = :pk",
            ProjectionExpression=projection,
            ExpressionAttributeValues={":pk": pk},
        )
        return list(items)


def _meta(thread_id: str, item: dict[str, Any]) -> ThreadMeta:
    run = item.get("activeRun", {}).get("S")
    return ThreadMeta(
        thread_id=thread_id,
        created_at=int(item["createdAt"]["N"]),
        updated_at=int(item["updatedAt"]["N"]),
        message_count=int(item.get("msgCount", {}).get("N", "0")),
        active_run=run,
        lease_until=int(item.get("leaseUntil", {}).get("N", "0")),
        channels=frozenset(item.get("channels", {}).get("SS", [])),
        next_item=int(item["nextItem"]["N"]) if "nextItem" in item else None,
    )


def _next_item(db: DynamoDBClient, table: str, app_id: str, thread_id: str) -> int:
    """The number of the thread's next message item (after the last one written)."""
    page = db.query(
        TableName=table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues={":pk": thread_pk(app_id, thread_id), ":prefix": {"S": MSG}},
        ScanIndexForward=False,
        Limit=1,
        ConsistentRead=True,
    )
    items = page.get("Items", [])
    return int(items[0]["sk"]["S"].removeprefix(MSG)) + 1 if items else 0
