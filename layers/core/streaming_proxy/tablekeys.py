"""Key layout of the single table (architecture decision 4), shared by every store.

Channels belong to an app: app A's channel `x` is the partition `CHANNEL#A#x`, app B's is
`CHANNEL#B#x`, so no read or write for one app can name the other's members. App ids
never contain '#' (config.APP_ID), so the first '#' after the app id ends it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import DependencyUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

CHANNEL = "CHANNEL#"
CONN = "CONN#"
STREAM = "STREAM#"
META = "META"
TOOL = "TOOL#"
LIMIT = "LIMIT#"
THREAD = "THREAD#"
MSG = "MSG#"
RUN = "RUN#"
INDEX = "INDEX#"
ASSISTANT = "ASSISTANT#"

T = TypeVar("T")


def now_epoch() -> int:
    return int(time.time())


def expired(item: Mapping[str, Any], now: int | None = None) -> bool:
    """Whether a table item is past its `expiresAt` (at `now`, else now). DynamoDB deletes
    expired items late (hours, even days), so a read judges them itself; an item without
    `expiresAt` never expires."""
    expires = item.get("expiresAt")
    return expires is not None and int(expires["N"]) < (now_epoch() if now is None else now)


def conn_key(connection_id: str) -> dict[str, Any]:
    return {"pk": {"S": CONN + connection_id}, "sk": {"S": META}}


def stream_key(stream_id: str) -> dict[str, Any]:
    return {"pk": {"S": STREAM + stream_id}, "sk": {"S": META}}


def tool_key(app_id: str, tool_call_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{TOOL}{app_id}#{tool_call_id}"}, "sk": {"S": META}}


def limit_key(app_id: str, window: str) -> dict[str, Any]:
    """One app's counter for one window: `LIMIT#<app>#rpm#<minute>`, `LIMIT#<app>#tpd#<day>`."""
    return {"pk": {"S": f"{LIMIT}{app_id}#{window}"}, "sk": {"S": META}}


def thread_pk(app_id: str, thread_id: str) -> dict[str, Any]:
    """The partition of one app's thread (`THREAD#<app>#<thread>`): its META, its messages
    (`MSG#<n>`), their index (`INDEX#<message number>`) and its runs (`RUN#<id>`); another
    app's id names another partition."""
    return {"S": f"{THREAD}{app_id}#{thread_id}"}


def thread_key(app_id: str, thread_id: str, sk: str = META) -> dict[str, Any]:
    return {"pk": thread_pk(app_id, thread_id), "sk": {"S": sk}}


def assistants_pk(app_id: str) -> dict[str, Any]:
    """The partition of one app's named assistants (`ASSISTANT#<app>`), one item each, its
    id the sort key: listing them is one query, and another app's id is simply absent."""
    return {"S": f"{ASSISTANT}{app_id}"}


def assistant_key(app_id: str, assistant_id: str) -> dict[str, Any]:
    return {"pk": assistants_pk(app_id), "sk": {"S": assistant_id}}


def msg_sk(number: int) -> str:
    """Message items sort in write order: the number is zero-padded."""
    return f"{MSG}{number:08d}"


def index_sk(number: int) -> str:
    """A run's entry in its thread's message index: the number of its first message
    (zero-padded, so a key range finds the run holding any message)."""
    return f"{INDEX}{number:010d}"


def channel_id(app_id: str, channel: str) -> str:
    """The table's name for an app's channel: `CHANNEL#<app>#<channel>`."""
    return f"{CHANNEL}{app_id}#{channel}"


def channel_prefix(app_id: str) -> str:
    return f"{CHANNEL}{app_id}#"


def membership_items(
    connection_id: str, app_id: str, channels: Iterable[str], expires: int
) -> list[dict[str, Any]]:
    """Forward (by channel) and reverse (by connection) rows for each channel of `app_id`."""
    items: list[dict[str, Any]] = []
    for channel in sorted(set(channels)):
        ttl = {"N": str(expires)}
        scoped = channel_id(app_id, channel)
        items.append({"pk": {"S": scoped}, "sk": {"S": CONN + connection_id}, "expiresAt": ttl})
        items.append({"pk": {"S": CONN + connection_id}, "sk": {"S": scoped}, "expiresAt": ttl})
    return items


def chunked(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def query_items(db: DynamoDBClient, **query: Any) -> Iterator[dict[str, Any]]:
    """Every item a `Query` finds, page after page (read lazily: stop iterating and no
    further page is read)."""
    while True:
        page = db.query(**query)
        yield from page.get("Items", [])
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        query = {**query, "ExclusiveStartKey": last}


def batch_write(db: DynamoDBClient, table: str, requests: Iterable[Any]) -> None:
    """Put/delete `requests` in batches of 25, sending again what DynamoDB leaves
    unprocessed (up to 8 tries a batch, 50 ms apart); DependencyUnavailable after that."""
    for batch in chunked(list(requests), 25):
        pending = batch
        for _ in range(8):
            out = db.batch_write_item(RequestItems={table: pending})
            pending = list(out.get("UnprocessedItems", {}).get(table, []))
            if not pending:
                break
            time.sleep(0.05)
        if pending:
            raise DependencyUnavailable(f"DynamoDB left {len(pending)} writes unprocessed")
