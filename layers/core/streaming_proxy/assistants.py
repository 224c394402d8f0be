"""AssistantStore: an app's named assistants in the single table, and how a run uses one.

One partition per app (`tablekeys.assistants_pk`), one item per assistant (sort key: its
`asst_...` id) holding its fields as one JSON document, bounded so no item nears
DynamoDB's 400 KB. A payload naming `assistant_id` takes each stored field it does not set
itself (`apply`): per field, an inline one replaces the stored one whole.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from .contract import AssistantBody, Payload
from .errors import Conflict, NotFound, PayloadTooLarge
from .tablekeys import assistant_key, assistants_pk, now_epoch, query_items
from .transactions import transact

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "FIELDS",
    "MAX_DOCUMENT_BYTES",
    "Assistant",
    "AssistantPage",
    "AssistantStore",
    "apply",
    "assistant_not_found",
    "new_assistant_id",
]

# The JSON of an assistant's fields, at most: well under DynamoDB's 400 KB item limit.
MAX_DOCUMENT_BYTES = 300_000
# The payload fields an assistant holds, in the order the merge takes them.
FIELDS = ("instructions", "model", "provider", "tools", "provider_args")
# The partition's counter item: its sort key sorts before every `asst_` id.
COUNTER_SK = "COUNT"


def new_assistant_id() -> str:
    return "asst_" + secrets.token_urlsafe(18)


def assistant_not_found(assistant_id: str) -> NotFound:
    return NotFound(f"assistant {assistant_id} not found")


@dataclass(frozen=True, slots=True)
class Assistant:
    assistant_id: str
    fields: AssistantBody
    created_at: int
    updated_at: int

    def as_json(self) -> dict[str, Any]:
        """The assistant as the API answers it (camelCase, absent fields left out)."""
        return {
            "id": self.assistant_id,
            "object": "assistant",
            **self.fields.model_dump(mode="json", by_alias=True, exclude_none=True),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class AssistantPage:
    assistants: list[Assistant]
    next_cursor: str | None


def apply(payload: Payload, assistant: AssistantBody) -> Payload:
    """The payload with each of the assistant's fields it does not set itself: a field the
    request sends (even null) wins whole; tools and providerArgs are not merged inside."""
    sent = payload.model_fields_set
    update = {
        field: getattr(assistant, field)
        for field in FIELDS
        if field not in sent and getattr(assistant, field) is not None
    }
    return payload.model_copy(update=update)


class AssistantStore:
    """Reads and writes assistants; all methods are blocking (call them via the DB pool).
    A counter item per app, changed in the same transaction as each create and delete,
    holds an app to its limit exactly, concurrent creates included."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    def create(self, app_id: str, fields: AssistantBody, limit: int) -> Assistant:
        """Store a new assistant; Conflict (409) when the app holds `limit` already."""
        now = now_epoch()
        assistant = Assistant(new_assistant_id(), fields, now, now)
        item = assistant_key(app_id, assistant.assistant_id)
        item |= {"doc": {"S": _document(fields)}, "name": {"S": fields.name}}
        item |= {"createdAt": {"N": str(now)}, "updatedAt": {"N": str(now)}}
        count = {
            "Key": self._counter(app_id),
            "UpdateExpression": "ADD n :one",
            "ConditionExpression": "attribute_not_exists(n) OR n < :max",
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":max": {"N": str(limit)}},
        }
        put = {"Item": item, "ConditionExpression": "attribute_not_exists(pk)"}
        if not transact(self._db, self._table, [{"Update": count}, {"Put": put}]):
            raise Conflict(
                f"this app stores {limit} assistants, its limit: delete one first "
                "(the app's maxAssistants, or MAX_ASSISTANTS_PER_APP)"
            )
        return assistant

    def get(self, app_id: str, assistant_id: str) -> Assistant:
        """The app's assistant, or NotFound (another app's id included)."""
        item = self._db.get_item(
            TableName=self._table, Key=assistant_key(app_id, assistant_id), ConsistentRead=True
        ).get("Item")
        if item is None:
            raise assistant_not_found(assistant_id)
        return _assistant(item)

    def replace(self, app_id: str, assistant_id: str, fields: AssistantBody) -> Assistant:
        """Replace every field of an existing assistant (PUT); NotFound when absent."""
        try:
            out = self._db.update_item(
                TableName=self._table,
                Key=assistant_key(app_id, assistant_id),
                UpdateExpression="SET doc = :doc, #name = :name, updatedAt = :now",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#name": "name"},
                ExpressionAttributeValues={
                    ":doc": {"S": _document(fields)},
                    ":name": {"S": fields.name},
                    ":now": {"N": str(now_epoch())},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as e:
            raise _absent(e, assistant_id) from e
        return _assistant(out["Attributes"])

    def delete(self, app_id: str, assistant_id: str) -> None:
        delete = {
            "Key": assistant_key(app_id, assistant_id),
            "ConditionExpression": "attribute_exists(pk)",
        }
        # Unconditional: an assistant stored before the counter existed leaves it below
        # the true count, never stuck above it.
        count = {
            "Key": self._counter(app_id),
            "UpdateExpression": "ADD n :minus",
            "ExpressionAttributeValues": {":minus": {"N": "-1"}},
        }
        if not transact(self._db, self._table, [{"Delete": delete}, {"Update": count}]):
            raise assistant_not_found(assistant_id)

    def page(self, app_id: str, limit: int, after: str | None) -> AssistantPage:
        """Up to `limit` assistants in id order, from after the id `after`."""
        args: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :asst)",
            "ExpressionAttributeValues": {":pk": assistants_pk(app_id), ":asst": {"S": "asst_"}},
            "ConsistentRead": True,
            "Limit": limit + 1,  # one more tells whether another page follows
        }
        if after is not None:
            args["ExclusiveStartKey"] = assistant_key(app_id, after)
        items = list(islice(query_items(self._db, **args), limit + 1))
        assistants = [_assistant(item) for item in items[:limit]]
        more = len(items) > limit
        return AssistantPage(assistants, assistants[-1].assistant_id if more else None)

    def _counter(self, app_id: str) -> dict[str, Any]:
        return {"pk": assistants_pk(app_id), "sk": {"S": COUNTER_SK}}


def _document(fields: AssistantBody) -> str:
    doc = json.dumps(fields.model_dump(mode="json", by_alias=True, exclude_none=True))
    if len(doc.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        raise PayloadTooLarge(f"an assistant's fields may take at most {MAX_DOCUMENT_BYTES} bytes")
    return doc


def _assistant(item: dict[str, Any]) -> Assistant:
    return Assistant(
        assistant_id=item["sk"]["S"],
        fields=AssistantBody.model_validate_json(item["doc"]["S"]),
        created_at=int(item["createdAt"]["N"]),
        updated_at=int(item["updatedAt"]["N"]),
    )


def _absent(error: ClientError, assistant_id: str) -> Exception:
    """NotFound for a failed `attribute_exists` condition; the error itself otherwise."""
    if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
        return assistant_not_found(assistant_id)
    return error
