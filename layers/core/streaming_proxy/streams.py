"""StreamStore: one small `STREAM#<id>` record per stream (status, cancel flag, the
snapshot's pointer); the snapshot text lives in segments beside it (snapshots.py)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from .errors import ProxyError
from .heartbeat import Heartbeat, heartbeat_of
from .snapshots import SegmentStore
from .tablekeys import expired, now_epoch, stream_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

StreamStatus = Literal["pending", "streaming", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})


def new_stream_id() -> str:
    return "st_" + secrets.token_urlsafe(16)


@dataclass(slots=True)
class StartError:
    """Why a stream failed before its first upstream byte (becomes the HTTP answer)."""

    status: int
    kind: str
    message: str
    code: int
    details: str = ""

    @classmethod
    def of(cls, error: ProxyError) -> StartError:
        return cls(error.status, error.kind, error.message, error.code, error.details)

    def as_error(self) -> ProxyError:
        """The recorded failure as an error to answer with."""
        error = ProxyError(self.message, status=self.status, kind=self.kind, details=self.details)
        error.code = self.code
        return error


@dataclass(slots=True)
class StreamRecord:
    stream_id: str
    app_id: str
    action_name: str
    channels: list[str]
    status: StreamStatus = "pending"
    cancel_requested: bool = False
    text: str = ""
    last_seq: int = -1
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    start_error: StartError | None = None
    text_truncated: bool = False
    created_at: float = field(default_factory=time.time)
    # A detached relay took the job (claim): a second delivery of its event is dropped.
    claimed: bool = False
    # The claiming relay's heartbeat (architecture.md, decision 46): when it claimed, when
    # it last said it runs, and every how many seconds it says so. None before a claim.
    heartbeat: Heartbeat | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class Poll(NamedTuple):
    """What a running relay polls its record for: a stop, or an end it did not write."""

    cancel: bool
    ended: bool


# The condition of a write that only a stream not final yet takes, and its values.
_OPEN = "#status IN (:pending, :streaming)"
_OPEN_VALUES: dict[str, Any] = {":pending": "pending", ":streaming": "streaming"}


class StreamStore:
    """Reads and writes stream records; all methods are blocking (call via a thread)."""

    def __init__(self, client: DynamoDBClient, table: str, ttl_seconds: int = 86_400) -> None:
        self._db = client
        self._table = table
        self._ttl = ttl_seconds
        self._segments = SegmentStore(client, table)

    def create(self, record: StreamRecord, *, acked: bool = False) -> None:
        """Write a new `pending` record; `acked` when its caller was answered at once."""
        self._db.put_item(
            TableName=self._table,
            Item={
                **stream_key(record.stream_id),
                "app": {"S": record.app_id},
                "actionName": {"S": record.action_name},
                "channels": {"S": json.dumps(record.channels)},
                "status": {"S": record.status},
                "acked": {"BOOL": acked},
                "cancelRequested": {"BOOL": False},
                "lastSeq": {"N": "-1"},
                "textChars": {"N": "0"},
                "createdAt": {"N": f"{record.created_at:.3f}"},
                "expiresAt": {"N": str(now_epoch() + self._ttl)},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get(self, stream_id: str, *, text: bool = False) -> StreamRecord | None:
        """The record (one small read); with `text`, also its snapshot text up to the
        record's pointer, read from the segments (only what resuming needs it for)."""
        got = self._db.get_item(
            TableName=self._table, Key=stream_key(stream_id), ConsistentRead=True
        )
        item = got.get("Item")
        # DynamoDB deletes an expired item lazily (hours, even days later): past its
        # `expiresAt` the record is gone, as the docs promise (no resume, stop or dead letter).
        if not item or expired(item):
            return None
        record = _record(stream_id, item)
        if text and "textChars" in item:
            end = int(item["textChars"]["N"])
            record.text, record.text_truncated = self._segments.read(stream_id, end)
        elif text:  # written before the segments: the text is in the record itself
            record.text = item.get("text", {}).get("S", "")
            record.text_truncated = item.get("textTruncated", {}).get("BOOL", False)
        return record

    def request_cancel(self, stream_id: str) -> StreamRecord | None:
        """Set the cancel flag; None when no such stream exists."""
        try:
            out = self._db.update_item(
                TableName=self._table,
                Key=stream_key(stream_id),
                UpdateExpression="SET cancelRequested = :t",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":t": {"BOOL": True}},
                ReturnValues="ALL_NEW",
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            return None
        return _record(stream_id, out["Attributes"])

    def poll(self, stream_id: str) -> Poll:
        """The cancel flag, and whether the stream is final, from the small record (a read
        bills the item's size, whatever it projects). Eventually consistent, half the price
        of a strong read: both only ever turn on, so a stale read delays a stop by at most
        the replica lag (usually well under a second; a stop in this process cancels at
        once anyway)."""
        got = self._db.get_item(
            TableName=self._table,
            Key=stream_key(stream_id),
            ConsistentRead=False,
            ProjectionExpression="cancelRequested, #status, startError",
            ExpressionAttributeNames={"#status": "status"},
        )
        item = got.get("Item", {})
        # A start failure (the ack told its caller to try again, `mark_start_failed`) stops
        # the relay as a stop does, `end` included, even before the cancel flag that follows
        # it lands; only an end that told the pages already (a dead letter's) silences it.
        start_failed = "startError" in item
        return Poll(
            cancel=start_failed or bool(item.get("cancelRequested", {}).get("BOOL", False)),
            ended=not start_failed and item.get("status", {}).get("S") in TERMINAL,
        )

    # Status moves forward only: pending -> streaming -> done | failed | cancelled. Every
    # write that moves it is conditional, so a late write can never move it back.

    def mark_started(self, stream_id: str) -> bool:
        """pending -> streaming; False when the stream had moved on already."""
        return self._transition(
            stream_id, {"status": {"S": "streaming"}}, "#status = :pending", {":pending": "pending"}
        )

    def mark_start_failed(self, stream_id: str, error: StartError) -> bool:
        """pending -> failed with the error for the waiting caller; False when the caller was
        answered already (then the failure must be published instead)."""
        failure = {
            "M": {
                "status": {"N": str(error.status)},
                "kind": {"S": error.kind},
                "code": {"N": str(error.code)},
                "message": {"S": error.message},
                "details": {"S": error.details},
            }
        }
        return self._transition(
            stream_id,
            {"status": {"S": "failed"}, "startError": failure},
            "#status = :pending AND (attribute_not_exists(acked) OR acked = :no)",
            {":pending": "pending", ":no": False},
        )

    def mark_acked(self, stream_id: str) -> bool:
        """The caller gave up waiting and was answered `started`; False when the stream had
        left `pending` first (read it again: it may have failed)."""
        return self._transition(
            stream_id, {"acked": {"BOOL": True}}, "#status = :pending", {":pending": "pending"}
        )

    def claim(
        self, stream_id: str, claimant: str | None = None, *, beat_seconds: float = 10.0
    ) -> bool:
        """Take the job of a detached relay, once: False when another delivery of the same
        event took it first, when the stream is no longer `pending` (its ack failed it:
        Lambda may have queued an event whose invoke raised, and the caller was told to
        try again) or when the record is gone. The same `claimant` (one per delivery; a
        fresh one when None) may claim again: a retry after an answer lost on the way is
        still its own. Leaves `status` alone, which tells the waiting ack whether the
        first byte came. The claim is the relay's first heartbeat (`aliveAt`), and says
        every how many seconds the next ones come (`beatSeconds`, `beat`)."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=stream_key(stream_id),
                UpdateExpression="SET claimedAt = :now, claimedBy = :by, aliveAt = :now, "
                "beatSeconds = :every",
                ConditionExpression="attribute_exists(pk) AND #status = :pending AND "
                "(attribute_not_exists(claimedAt) OR claimedBy = :by)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":now": {"N": f"{time.time():.3f}"},
                    ":pending": {"S": "pending"},
                    ":by": {"S": claimant or secrets.token_urlsafe(12)},
                    ":every": {"N": f"{beat_seconds:g}"},
                },
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def beat(self, stream_id: str) -> bool:
        """The claiming relay runs (`aliveAt` now); False once the stream is final (then
        beating ends; the relay's `poll` tells which end it was)."""
        return self._transition(
            stream_id, {"aliveAt": {"N": f"{time.time():.3f}"}}, _OPEN, _OPEN_VALUES
        )

    def mark_lost(
        self,
        stream_id: str,
        end_seq: int,
        usage: dict[str, Any],
        *,
        stale_before: float | None = None,
    ) -> bool:
        """pending | streaming -> failed for a relay that never ran or died (dead letter),
        with `end_seq`, the seq of the `end` published for it; False when the stream had
        finished (or the record is gone): then nothing is to be told. With `stale_before`,
        also False when a relay's heartbeat is newer than that (one claimed it, or beat,
        since the record was read): a live relay's stream is never failed under it."""
        values = {
            "status": {"S": "failed"},
            "lastSeq": {"N": str(end_seq)},
            "finishReason": {"S": "error"},
            "usage": {"S": json.dumps(usage)},
        }
        condition = _OPEN
        params: dict[str, Any] = dict(_OPEN_VALUES)
        if stale_before is not None:
            condition += " AND (attribute_not_exists(aliveAt) OR aliveAt < :stale)"
            params[":stale"] = round(stale_before, 3)
        return self._transition(stream_id, values, condition, params)

    def save_progress(self, stream_id: str, text: str, last_seq: int, *, stored: int = 0) -> bool:
        """The text published so far (`text[stored:]` is new: written as segments, then
        the pointer moves forward); never over a final record (False then)."""
        self._segments.write(stream_id, text, stored, self._expires())
        return self._transition(
            stream_id,
            _pointer(text, last_seq),
            f"{_OPEN} AND (attribute_not_exists(textChars) OR textChars <= :chars)",
            {**_OPEN_VALUES, ":chars": len(text)},
        )

    def save_final(
        self,
        stream_id: str,
        text: str,
        last_seq: int,
        status: StreamStatus,
        *,
        finish_reason: str,
        usage: dict[str, Any],
        stored: int = 0,
    ) -> bool:
        """The terminal status and the whole text (`text[stored:]` written as segments
        first). Status moves forward only: False when the record holds another terminal
        status already (the same one again is a retry that landed: True)."""
        self._segments.write(stream_id, text, stored, self._expires())
        values = _pointer(text, last_seq)
        values["status"] = {"S": status}
        values["finishReason"] = {"S": finish_reason}
        values["usage"] = {"S": json.dumps(usage)}
        return self._transition(
            stream_id,
            values,
            "#status IN (:pending, :streaming, :final)",
            {":pending": "pending", ":streaming": "streaming", ":final": status},
        )

    def _expires(self) -> int:
        return now_epoch() + self._ttl

    def _transition(
        self, stream_id: str, values: dict[str, Any], condition: str, params: dict[str, Any]
    ) -> bool:
        try:
            self._set(stream_id, values, condition, params)
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _set(
        self,
        stream_id: str,
        values: dict[str, Any],
        condition: str | None,
        params: dict[str, Any],
    ) -> None:
        names = {f"#a{i}": name for i, name in enumerate(values)}
        attrs = {f":v{i}": value for i, value in enumerate(values.values())}
        for name, value in params.items():
            if isinstance(value, bool):
                attrs[name] = {"BOOL": value}
            elif isinstance(value, int | float):
                attrs[name] = {"N": str(value)}
            else:
                attrs[name] = {"S": value}
        kwargs: dict[str, Any] = {}
        if condition is not None:
            names["#status"] = "status"
            kwargs["ConditionExpression"] = f"attribute_exists(pk) AND ({condition})"
        self._db.update_item(
            TableName=self._table,
            Key=stream_key(stream_id),
            UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=attrs,
            **kwargs,
        )


def _pointer(text: str, last_seq: int) -> dict[str, Any]:
    """The record's side of a snapshot: how much text its segments hold, up to which seq."""
    return {"textChars": {"N": str(len(text))}, "lastSeq": {"N": str(last_seq)}}


def _record(stream_id: str, item: dict[str, Any]) -> StreamRecord:
    start_error = None
    if "startError" in item:
        m = item["startError"]["M"]
        start_error = StartError(
            int(m["status"]["N"]),
            m["kind"]["S"],
            m["message"]["S"],
            int(m["code"]["N"]),
            m["details"]["S"],
        )
    usage = json.loads(item["usage"]["S"]) if "usage" in item else None
    return StreamRecord(
        stream_id=stream_id,
        app_id=item["app"]["S"],
        action_name=item["actionName"]["S"],
        channels=json.loads(item["channels"]["S"]),
        status=item["status"]["S"],
        cancel_requested=item.get("cancelRequested", {}).get("BOOL", False),
        last_seq=int(item.get("lastSeq", {}).get("N", "-1")),
        finish_reason=item.get("finishReason", {}).get("S"),
        usage=usage,
        start_error=start_error,
        created_at=float(item["createdAt"]["N"]),
        claimed="claimedAt" in item,
        heartbeat=heartbeat_of(item),
    )
