"""ToolCallStore: `TOOL#<app>#<id>` records of the frontend tool calls a stream waits on.

A record is written before the browsers hear of the call (so an answer always finds it),
answered once (a conditional write: the first answer wins), and closed when the stream
stops waiting. It names the stream's channels: only a connection or token of the same app
on one of them may answer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .tablekeys import batch_write, now_epoch, tool_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ToolStatus = Literal["waiting", "answered", "closed"]


@dataclass(slots=True)
class ToolCallRecord:
    app_id: str
    call_id: str
    stream_id: str
    name: str
    channels: list[str]
    status: ToolStatus = "waiting"
    answer: dict[str, Any] | None = None
    answered_by: str | None = None
    created_at: float = field(default_factory=time.time)


class ToolCallStore:
    """Reads and writes tool call records; all methods are blocking (call via a thread)."""

    def __init__(self, client: DynamoDBClient, table: str, ttl_seconds: int = 3600) -> None:
        self._db = client
        self._table = table
        self._ttl = ttl_seconds

    def open(self, records: list[ToolCallRecord]) -> None:
        """Write the calls a stream is about to wait on (ids are random: no overwrite)."""
        expires = {"N": str(now_epoch() + self._ttl)}
        puts = (
            {
                "PutRequest": {
                    "Item": {
                        **tool_key(r.app_id, r.call_id),
                        "streamId": {"S": r.stream_id},
                        "name": {"S": r.name},
                        "channels": {"S": json.dumps(r.channels)},
                        "status": {"S": r.status},
                        "createdAt": {"N": f"{r.created_at:.3f}"},
                        "expiresAt": expires,
                    }
                }
            }
            for r in records
        )
        batch_write(self._db, self._table, puts)

    def get(self, app_id: str, call_id: str) -> ToolCallRecord | None:
        got = self._db.get_item(
            TableName=self._table, Key=tool_key(app_id, call_id), ConsistentRead=True
        )
        item = got.get("Item")
        if item is None or "streamId" not in item:
            return None
        answer = json.loads(item["answer"]["S"]) if "answer" in item else None
        return ToolCallRecord(
            app_id=app_id,
            call_id=call_id,
            stream_id=item["streamId"]["S"],
            name=item["name"]["S"],
            channels=json.loads(item["channels"]["S"]),
            status=_status(item["status"]["S"]),
            answer=answer,
            answered_by=item.get("answeredBy", {}).get("S"),
            created_at=float(item["createdAt"]["N"]),
        )

    def answer(self, app_id: str, call_id: str, answer: dict[str, Any], by: str) -> bool:
        """Record the answer if the call still waits for one; False when it does not."""
        return self._leave_waiting(
            app_id,
            call_id,
            "answered",
            "answer = :a, answeredBy = :by",
            {":a": {"S": json.dumps(answer, ensure_ascii=False)}, ":by": {"S": by}},
        )

    def close(self, app_id: str, call_id: str) -> None:
        """The stream stopped waiting (answered, timed out, stopped): refuse later answers."""
        self._leave_waiting(app_id, call_id, "closed")

    def _leave_waiting(
        self,
        app_id: str,
        call_id: str,
        status: ToolStatus,
        also: str = "",
        values: dict[str, Any] | None = None,
    ) -> bool:
        """waiting -> `status` (setting `also` too), once: False if it was not waiting."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=tool_key(app_id, call_id),
                UpdateExpression="SET #s = :next" + (f", {also}" if also else ""),
                ConditionExpression="#s = :waiting",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":next": {"S": status},
                    ":waiting": {"S": "waiting"},
                    **(values or {}),
                },
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
        return True


def _status(value: str) -> ToolStatus:
    if value == "answered":
        return "answered"
    return "closed" if value == "closed" else "waiting"
