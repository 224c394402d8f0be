"""Hostile tests of a stream record past its time: DynamoDB deletes expired items lazily
(hours, up to days, after `expiresAt`), so a record past it must read as gone, as the docs
promise ("`not_found` ... once its record has expired, about a day after it started"):
no resume of its text, no stop, no dead letter telling its channels a day late."""

from __future__ import annotations

from streaming_proxy import aws
from streaming_proxy.tablekeys import now_epoch, stream_key
from tests.unit.test_connections import TABLE, Stack, make_stream, stack

__all__ = ["stack"]


def expire(stream_id: str) -> None:
    aws.dynamodb("us-east-1", None).update_item(
        TableName=TABLE,
        Key=stream_key(stream_id),
        UpdateExpression="SET expiresAt = :past",
        ExpressionAttributeValues={":past": {"N": str(now_epoch() - 1)}},
    )


def test_resume_and_stop_of_an_expired_record_are_not_found(stack: Stack) -> None:
    stack.connect("user-42")
    make_stream("st_old", ["user-42"], text="said a day ago", status="streaming")
    assert stack.send({"action": "resume", "streamId": "st_old"})["type"] == "snapshot"
    expire("st_old")
    for action in ("resume", "stop"):
        reply = stack.send({"action": action, "streamId": "st_old"})
        assert reply == {"type": "not_found", "streamId": "st_old"}, action
    item = stack.db.get_item(TableName=TABLE, Key=stream_key("st_old"))["Item"]
    assert item["cancelRequested"]["BOOL"] is False
