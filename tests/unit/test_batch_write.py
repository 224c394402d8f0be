"""tablekeys.batch_write: batches of 25, what DynamoDB leaves unprocessed sent again, bounded."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from streaming_proxy.errors import DependencyUnavailable
from streaming_proxy.tablekeys import batch_write

TABLE = "t"


def put(i: int) -> dict[str, Any]:
    return {"PutRequest": {"Item": {"pk": {"S": f"K#{i}"}, "sk": {"S": "META"}}}}


def client() -> Any:
    return boto3.client(
        "dynamodb",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_writes_in_batches_of_25_and_sends_the_unprocessed_again() -> None:
    db = client()
    requests = [put(i) for i in range(30)]
    with Stubber(db) as stub:
        left = requests[3:5]
        stub.add_response(
            "batch_write_item",
            {"UnprocessedItems": {TABLE: left}},
            {"RequestItems": {TABLE: requests[:25]}},
        )
        stub.add_response("batch_write_item", {}, {"RequestItems": {TABLE: left}})
        stub.add_response("batch_write_item", {}, {"RequestItems": {TABLE: requests[25:]}})
        batch_write(db, TABLE, iter(requests))
        stub.assert_no_pending_responses()


def test_gives_up_after_eight_tries_of_a_batch() -> None:
    db = client()
    with Stubber(db) as stub:
        for _ in range(8):
            stub.add_response("batch_write_item", {"UnprocessedItems": {TABLE: [put(0)]}})
        with pytest.raises(DependencyUnavailable, match="left 1 writes unprocessed"):
            batch_write(db, TABLE, [put(0)])
        stub.assert_no_pending_responses()
