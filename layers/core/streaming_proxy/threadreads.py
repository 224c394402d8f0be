"""Reading a thread's messages a part at a time, so that a read costs what it returns.

A run's history is read newest first (`recent`): `MSG#` items in reverse, decoded run by
run, until `history.shortfall` says that no older message can change what the run sends. A
page (`page`) starts at the run holding its first message, found through that run's
`INDEX#<number>` entry (one small item), and reads forward only as far as the page needs.
Each query asks for about as many items as the tokens or messages still wanted fill, judged
from the items already read. Runs stored before messages were numbered (items without
`first`) are numbered by counting from the thread's first item, as they always were.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .history import Messages, json_lines, unpack
from .tablekeys import MSG, expired, index_sk, msg_sk

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["Page", "Recent", "StoredRun", "page", "recent"]

Item = dict[str, Any]

# Items the first query of a read asks for; later ones are sized from what it returned.
FIRST_ITEMS = 8
MAX_ITEMS = 100
# The token estimate's characters per token (tokens.py): tokens wanted -> items to ask for.
CHARS_PER_TOKEN = 4
# A page's messages as stored (JSON, ASCII-escaped), at most: past it the page ends (with
# at least one message), so `limit` huge messages never make one reply of hundreds of MB.
MAX_PAGE_CHARS = 1_048_576
LAST_ITEM = msg_sk(10**8 - 1)


@dataclass(frozen=True, slots=True)
class StoredRun:
    """One run's messages; `first` numbers its first message in the thread (None for a run
    stored before messages were numbered)."""

    first: int | None
    messages: Messages


@dataclass(frozen=True, slots=True)
class Recent:
    """A thread's newest messages, oldest first, and how many older ones were not read (the
    oldest run read's number: 0 when the read reached the thread's first item, or when that
    run was stored before messages were numbered)."""

    messages: Messages
    older: int


@dataclass(frozen=True, slots=True)
class Page:
    messages: Messages
    next_cursor: int | None


def recent(
    db: DynamoDBClient, table: str, pk: Any, shortfall: Callable[[Messages], int], now: int
) -> Recent:
    """The newest whole runs of the thread (still within their TTL), read until
    `shortfall(messages so far)` is 0 or the thread's first item is read."""
    condition = "pk = :pk AND begins_with(sk, :msg)"
    reader = _Items(db, table, condition, {":pk": pk, ":msg": {"S": MSG}}, forward=False)
    runs = _Runs(now, newest_first=True)
    found: list[StoredRun] = []  # newest first
    limit = FIRST_ITEMS
    while not reader.done:
        for item in reader.read(limit):
            found += runs.add(item)
        if reader.done:
            found += runs.close()
            break
        need = shortfall([m for run in reversed(found) for m in run.messages])
        if need == 0:
            break
        limit = _items_for(need * CHARS_PER_TOKEN, reader.chars_per_item())
    older = 0 if reader.done or not found else found[-1].first or 0
    return Recent([m for run in reversed(found) for m in run.messages], older)


def page(
    db: DynamoDBClient, table: str, pk: Any, cursor: int, limit: int, total: int, now: int
) -> Page:
    """Up to `limit` messages numbered `cursor` on (a thread's messages are numbered from 0
    in write order; runs past their TTL are skipped); the next cursor when more follow
    (`total`: the thread's message count)."""
    if cursor >= total:
        return Page([], None)
    start = _start_item(db, table, pk, cursor) if cursor else 0
    values = {":pk": pk, ":from": {"S": msg_sk(start)}, ":to": {"S": LAST_ITEM}}
    reader = _Items(db, table, "pk = :pk AND sk BETWEEN :from AND :to", values, forward=True)
    runs, pager = _Runs(now, newest_first=False), _Pager(cursor, limit, MAX_PAGE_CHARS)
    ask = FIRST_ITEMS
    while not reader.done and not pager.full:
        closed = [run for item in reader.read(ask) for run in runs.add(item)]
        if reader.done:
            closed += runs.close()
        for run in closed:
            pager.add(run)
        ask = _items_for(limit - len(pager.kept), pager.seen / max(1, reader.count), ask)
    more = pager.beyond or (not reader.done and pager.end < total)
    return Page(pager.kept, pager.end if more else None)


def _start_item(db: DynamoDBClient, table: str, pk: Any, cursor: int) -> int:
    """The first item of the run holding message `cursor` (the run numbered at or before it,
    by its `INDEX#` entry); 0, the thread's first item, when no run is indexed there."""
    found = db.query(
        TableName=table,
        KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
        ExpressionAttributeValues={
            ":pk": pk,
            ":lo": {"S": index_sk(0)},
            ":hi": {"S": index_sk(cursor)},
        },
        ScanIndexForward=False,
        Limit=1,
        ConsistentRead=True,
    ).get("Items", [])
    return int(found[0]["item"]["N"]) if found else 0


def _items_for(wanted: float, per_item: float, last: int = FIRST_ITEMS) -> int:
    """Items to ask for to cover `wanted` (characters or messages) at `per_item` each, plus
    one; twice the last ask while nothing has told how much an item holds."""
    if per_item <= 0:
        return min(MAX_ITEMS, last * 2)
    return max(1, min(MAX_ITEMS, math.ceil(wanted / per_item) + 1))


class _Items:
    """One query's items, a page at a time, with how many were read and their characters."""

    def __init__(
        self,
        db: DynamoDBClient,
        table: str,
        condition: str,
        values: dict[str, Any],
        *,
        forward: bool,
    ) -> None:
        self._db = db
        self._args: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": forward,
            "ConsistentRead": True,
        }
        self.done = False
        self.count = 0
        self.chars = 0

    def read(self, limit: int) -> list[Item]:
        page = self._db.query(**self._args, Limit=limit)
        if "LastEvaluatedKey" in page:
            self._args["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        else:
            self.done = True
        items: list[Item] = page.get("Items", [])
        self.count += len(items)
        self.chars += sum(len(item["data"]["S"]) for item in items)
        return items

    def chars_per_item(self) -> float:
        return self.chars / max(1, self.count)


class _Runs:
    """Items in key order (either way) into whole runs: a run's items are contiguous. A run
    with an item past its TTL, or missing (DynamoDB deletes expired items one by one), is
    left out whole."""

    def __init__(self, now: int, *, newest_first: bool) -> None:
        self._now = now
        self._newest_first = newest_first
        self._items: list[Item] = []

    def add(self, item: Item) -> list[StoredRun]:
        """The runs this item closes (none, or the one before it and its own if whole)."""
        closed = []
        if self._items and self._items[-1]["run"]["S"] != item["run"]["S"]:
            closed = self.close()
        self._items.append(item)
        if len(self._items) == int(item["parts"]["N"]):
            closed += self.close()
        return closed

    def close(self) -> list[StoredRun]:
        items, self._items = self._items, []
        if self._newest_first:
            items.reverse()
        live = [i for i in items if not expired(i, self._now)]
        if not live or len(live) != int(live[0]["parts"]["N"]):
            return []
        first = live[0].get("first")
        messages = unpack(item["data"]["S"] for item in live)
        return [StoredRun(None if first is None else int(first["N"]), messages)]


class _Pager:
    """The page's messages out of whole runs read in order: those numbered `cursor` on, up
    to `limit` and `max_chars` as stored (one at least); `beyond` once a message past the
    page was seen."""

    def __init__(self, cursor: int, limit: int, max_chars: int) -> None:
        self._cursor = cursor
        self._limit = limit
        self._max_chars = max_chars
        self._next = 0  # the number after the last run's (a run without one continues it)
        self.kept: Messages = []
        self.chars = 0
        self.end = cursor
        self.seen = 0
        self.beyond = False

    @property
    def full(self) -> bool:
        return len(self.kept) >= self._limit or self.chars >= self._max_chars

    def add(self, run: StoredRun) -> None:
        number = self._next if run.first is None else run.first
        self._next = number + len(run.messages)
        self.seen += len(run.messages)
        for offset, message in enumerate(run.messages):
            if number + offset < self._cursor:
                continue
            if self.full:
                self.beyond = True
                return
            self.kept.append(message)
            self.chars += len(json_lines([message]))
            self.end = number + offset + 1
