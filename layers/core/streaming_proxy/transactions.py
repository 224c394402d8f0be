"""DynamoDB transactions whose first action's condition is the question they ask.

`TransactWriteItems` cancels the whole transaction when a condition fails, and also when it
meets another transaction on one of its items (`TransactionConflict`): the second is a
collision, not an answer, so it is tried again a few times after a short pause.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["TRIES", "cancellation_codes", "transact"]

# Tries of a transaction that keeps meeting others on its items.
TRIES = 4
FIRST_PAUSE_SECONDS = 0.02


def transact(db: DynamoDBClient, table: str, actions: list[dict[str, Any]]) -> bool:
    """Write `actions` (`{"Put": {...}}`, `{"Update": {...}}`, ... without the table) on
    `table` in one transaction: True when written, False when the first action's condition
    did not hold. Any other cancellation (another action's condition, conflicts past the
    last try) and any other error are raised."""
    items = [
        {kind: {**body, "TableName": table}} for action in actions for kind, body in action.items()
    ]
    attempt = 0
    while True:
        try:
            db.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
            return True
        except ClientError as e:
            codes = cancellation_codes(e)
            if codes is None:
                raise
            if codes[:1] == ["ConditionalCheckFailed"]:
                return False
            attempt += 1
            if "TransactionConflict" not in codes or attempt == TRIES:
                raise
        time.sleep(FIRST_PAUSE_SECONDS * 2 ** (attempt - 1))


def cancellation_codes(error: ClientError) -> list[str] | None:
    """Each item's code of a cancelled transaction, in order (`None` when `error` is not a
    cancellation): `ConditionalCheckFailed`, `TransactionConflict`, `None` (that item was
    fine), ..."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons: list[dict[str, Any]] = error.response.get("CancellationReasons", [])  # type: ignore[assignment]
    return [reason.get("Code", "None") for reason in reasons]
