"""ConnectionStore: channel membership in the single DynamoDB table, read by Query only."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..tablekeys import (
    CHANNEL,
    CONN,
    META,
    batch_write,
    channel_id,
    channel_prefix,
    conn_key,
    expired,
    membership_items,
    now_epoch,
    query_items,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass(frozen=True, slots=True)
class LiveConnection:
    """A connection's META row: its app, and when its rows expire (its 2 h lifetime)."""

    connection_id: str
    app_id: str
    expires_at: int


class ConnectionStore:
    """Membership rows: `CHANNEL#<app>#<ch>/CONN#<cid>` (fan-out) and the reverse
    `CONN#<cid>/CHANNEL#<app>#<ch>` (cleanup). Every channel argument is scoped by app.

    Every row carries `expiresAt` (TTL): `$disconnect` is best effort, so rows of a
    connection that vanished expire with the connection's 2 h maximum lifetime.
    """

    def __init__(self, client: DynamoDBClient, table: str, ttl_seconds: int = 7200) -> None:
        self._db = client
        self._table = table
        self._ttl = ttl_seconds

    def open(self, connection_id: str, app_id: str, channels: Iterable[str]) -> None:
        """Record a new connection of `app_id` and join it to `channels`."""
        expires = now_epoch() + self._ttl
        meta = {
            "pk": {"S": CONN + connection_id},
            "sk": {"S": META},
            "app": {"S": app_id},
            "connectedAt": {"N": str(int(time.time()))},
            "expiresAt": {"N": str(expires)},
        }
        items = [meta, *membership_items(connection_id, app_id, channels, expires)]
        self._write(items)

    def live(self, connection_id: str) -> LiveConnection | None:
        """A live connection's app and expiry (one consistent read), or None if unknown."""
        got = self._db.get_item(
            TableName=self._table, Key=conn_key(connection_id), ConsistentRead=True
        )
        item = got.get("Item")
        if not item or expired(item):
            return None
        return LiveConnection(connection_id, item["app"]["S"], int(item["expiresAt"]["N"]))

    def add(self, connection: LiveConnection, channels: Iterable[str]) -> None:
        """Join a live connection to more of its app's channels (expiring with it)."""
        self._write(
            membership_items(
                connection.connection_id, connection.app_id, channels, connection.expires_at
            )
        )

    def remove(self, connection_id: str, app_id: str, channel: str) -> None:
        """Leave one channel."""
        scoped = channel_id(app_id, channel)
        self._delete(
            [
                {"pk": {"S": scoped}, "sk": {"S": CONN + connection_id}},
                {"pk": {"S": CONN + connection_id}, "sk": {"S": scoped}},
            ]
        )

    def channels_of(self, connection_id: str, app_id: str) -> set[str]:
        """The app's channels a connection is in (its private `tab|<id>` channel included)."""
        prefix = channel_prefix(app_id)
        return {
            item["sk"]["S"][len(prefix) :] for item in self._query(CONN + connection_id, prefix)
        }

    def close(self, connection_id: str) -> None:
        """Remove every row of a connection (on `$disconnect` or a 410 from a post)."""
        keys: list[dict[str, Any]] = []
        for item in self._query(CONN + connection_id, ""):
            keys.append({"pk": item["pk"], "sk": item["sk"]})
            sk = item["sk"]["S"]
            if sk.startswith(CHANNEL):
                keys.append({"pk": {"S": sk}, "sk": {"S": CONN + connection_id}})
        self._delete(keys)

    def members(self, app_id: str, channel: str) -> list[str]:
        """Connections in an app's channel (one Query, paginated, expired rows skipped;
        eventually consistent, half the price: a row written a moment ago is found by the
        next refresh)."""
        return [
            item["sk"]["S"][len(CONN) :] for item in self._query(channel_id(app_id, channel), CONN)
        ]

    def _query(self, pk: str, sk_prefix: str) -> Iterator[dict[str, Any]]:
        values: dict[str, Any] = {":pk": {"S": pk}, ":now": {"N": str(now_epoch())}}
        condition = "pk = :pk"
        if sk_prefix:  # DynamoDB refuses an empty string in a key condition
            condition += " AND begins_with(sk, :prefix)"
            values[":prefix"] = {"S": sk_prefix}
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "FilterExpression": "expiresAt > :now",
            "ExpressionAttributeValues": values,
            "ProjectionExpression": "pk, sk",
        }
        yield from query_items(self._db, **kwargs)

    def _write(self, items: list[dict[str, Any]]) -> None:
        batch_write(self._db, self._table, ({"PutRequest": {"Item": item}} for item in items))

    def _delete(self, keys: list[dict[str, Any]]) -> None:
        batch_write(self._db, self._table, ({"DeleteRequest": {"Key": key}} for key in keys))
