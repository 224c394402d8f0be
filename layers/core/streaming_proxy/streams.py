"""StreamStore: one `STREAM#<id>` record per stream (status, cancel flag, snapshot)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .tablekeys import now_epoch, stream_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

StreamStatus = Literal["pending", "streaming", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})

# DynamoDB items max out at 400 KB; the snapshot text keeps well below that.
MAX_SNAPSHOT_BYTES = 300_000


def new_stream_id() -> str:
    return "st_" + secrets.token_urlsafe(16)


@dataclass(slots=True)
class StartError:
    """Why a stream failed before its first upstream byte (becomes the HTTP answer)."""

    status: int
    code: str
    message: str


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

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class StreamStore:
    """Reads and writes stream records; all methods are blocking (call via a thread)."""

    def __init__(self, client: DynamoDBClient, table: str, ttl_seconds: int = 86_400) -> None:
        self._db = client
        self._table = table
        self._ttl = ttl_seconds

    def create(self, record: StreamRecord) -> None:
        self._db.put_item(
            TableName=self._table,
            Item={
                **stream_key(record.stream_id),
                "app": {"S": record.app_id},
                "actionName": {"S": record.action_name},
                "channels": {"S": json.dumps(record.channels)},
                "status": {"S": record.status},
                "cancelRequested": {"BOOL": False},
                "lastSeq": {"N": "-1"},
                "text": {"S": ""},
                "createdAt": {"N": f"{record.created_at:.3f}"},
                "expiresAt": {"N": str(now_epoch() + self._ttl)},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get(self, stream_id: str) -> StreamRecord | None:
        got = self._db.get_item(
            TableName=self._table, Key=stream_key(stream_id), ConsistentRead=True
        )
        item = got.get("Item")
        return _record(stream_id, item) if item else None

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

    def cancel_requested(self, stream_id: str) -> bool:
        got = self._db.get_item(
            TableName=self._table,
            Key=stream_key(stream_id),
            ConsistentRead=True,
            ProjectionExpression="cancelRequested",
        )
        return bool(got.get("Item", {}).get("cancelRequested", {}).get("BOOL", False))

    def mark_started(self, stream_id: str) -> None:
        self._set(stream_id, {"status": {"S": "streaming"}})

    def mark_start_failed(self, stream_id: str, error: StartError) -> None:
        self._set(
            stream_id,
            {
                "status": {"S": "failed"},
                "startError": {
                    "M": {
                        "status": {"N": str(error.status)},
                        "code": {"S": error.code},
                        "message": {"S": error.message},
                    }
                },
            },
        )

    def save_snapshot(
        self,
        stream_id: str,
        text: str,
        last_seq: int,
        status: StreamStatus,
        *,
        finish_reason: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Persist the text so far; writes at most ~300 KB (the tail is what a resume needs)."""
        encoded = text.encode("utf-8")
        if len(encoded) > MAX_SNAPSHOT_BYTES:
            text = encoded[-MAX_SNAPSHOT_BYTES:].decode("utf-8", errors="ignore")
        values: dict[str, Any] = {
            "text": {"S": text},
            "lastSeq": {"N": str(last_seq)},
            "status": {"S": status},
            "textTruncated": {"BOOL": len(encoded) > MAX_SNAPSHOT_BYTES},
        }
        if finish_reason is not None:
            values["finishReason"] = {"S": finish_reason}
        if usage is not None:
            values["usage"] = {"S": json.dumps(usage)}
        self._set(stream_id, values)

    def _set(self, stream_id: str, values: dict[str, Any]) -> None:
        names = {f"#a{i}": name for i, name in enumerate(values)}
        attrs = {f":v{i}": value for i, value in enumerate(values.values())}
        expression = ", ".join(f"#a{i} = :v{i}" for i in range(len(values)))
        self._db.update_item(
            TableName=self._table,
            Key=stream_key(stream_id),
            UpdateExpression="SET " + expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=attrs,
        )


def _record(stream_id: str, item: dict[str, Any]) -> StreamRecord:
    start_error = None
    if "startError" in item:
        m = item["startError"]["M"]
        start_error = StartError(int(m["status"]["N"]), m["code"]["S"], m["message"]["S"])
    usage = json.loads(item["usage"]["S"]) if "usage" in item else None
    return StreamRecord(
        stream_id=stream_id,
        app_id=item["app"]["S"],
        action_name=item["actionName"]["S"],
        channels=json.loads(item["channels"]["S"]),
        status=item["status"]["S"],
        cancel_requested=item.get("cancelRequested", {}).get("BOOL", False),
        text=item.get("text", {}).get("S", ""),
        last_seq=int(item.get("lastSeq", {}).get("N", "-1")),
        finish_reason=item.get("finishReason", {}).get("S"),
        usage=usage,
        start_error=start_error,
        text_truncated=item.get("textTruncated", {}).get("BOOL", False),
        created_at=float(item["createdAt"]["N"]),
    )
