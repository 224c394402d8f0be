"""A transaction's answer: written, its first condition failed, or an error; a collision
with another transaction is tried again (transactions.py)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from streaming_proxy import transactions
from streaming_proxy.transactions import TRIES, transact

ACTIONS: list[dict[str, Any]] = [{"Put": {"Item": {}}}]
# What reaches DynamoDB: each action on the table `transact` was given.
ITEMS: list[dict[str, Any]] = [{"Put": {"Item": {}, "TableName": "t"}}]


def cancelled(*codes: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": code} for code in codes],
        },
        "TransactWriteItems",
    )


class Db:
    """A client whose `transact_write_items` raises each of `errors` in turn, then writes."""

    def __init__(self, *errors: ClientError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> dict[str, Any]:
        assert TransactItems == ITEMS
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {}


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "FIRST_PAUSE_SECONDS", 0.0)


def test_a_written_transaction_is_true() -> None:
    db = Db()
    assert transact(db, "t", ACTIONS) is True  # type: ignore[arg-type]
    assert db.calls == 1


def test_the_first_items_failed_condition_is_false_and_not_tried_again() -> None:
    db = Db(cancelled("ConditionalCheckFailed", "None"))
    assert transact(db, "t", ACTIONS) is False  # type: ignore[arg-type]
    assert db.calls == 1


def test_a_collision_with_another_transaction_is_tried_again() -> None:
    db = Db(cancelled("None", "TransactionConflict"), cancelled("TransactionConflict", "None"))
    assert transact(db, "t", ACTIONS) is True  # type: ignore[arg-type]
    assert db.calls == 3


def test_a_collision_that_lasts_is_raised_after_the_last_try() -> None:
    db = Db(*(cancelled("TransactionConflict") for _ in range(TRIES)))
    with pytest.raises(ClientError):
        transact(db, "t", ACTIONS)  # type: ignore[arg-type]
    assert db.calls == TRIES


@pytest.mark.parametrize(
    "error",
    [
        cancelled("None", "ConditionalCheckFailed"),  # another item's condition: not the question
        cancelled("ValidationError"),
        ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "T"),
    ],
)
def test_every_other_failure_is_raised(error: ClientError) -> None:
    db = Db(error)
    with pytest.raises(ClientError):
        transact(db, "t", ACTIONS)  # type: ignore[arg-type]
    assert db.calls == 1
