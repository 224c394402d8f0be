"""DynamoDB capacity units as DynamoDB bills them, counted from item sizes on a client's calls.

The arithmetic is AWS's (DynamoDB developer guide, "Item sizes and formats" and "Read/write
capacity units"):

- An item's size is the UTF-8 bytes of its attribute names plus its values: a string its
  UTF-8 bytes, a number 1 byte per two significant digits plus 1, a boolean or null 1 byte,
  a list or map 3 bytes plus its elements (1 byte more each) plus, for a map, their names.
- A read bills the size of the whole item(s) read, whatever `ProjectionExpression` keeps:
  GetItem its item, Query the items it reads (before any filter) together, rounded up to
  4 KB units (at least one); strongly consistent 1 unit per 4 KB, eventually consistent half.
- A write bills the larger of the item's size before and after, in 1 KB units (at least
  one), for PutItem, UpdateItem (even of one attribute), DeleteItem and each BatchWriteItem
  request, and also when its condition fails.

The meter hooks a botocore client's events; before each call it reads the items involved
with a second client (not counted), so it sees the sizes at that moment.
"""

from __future__ import annotations

import math
import re
import threading
from collections import defaultdict
from decimal import Decimal
from typing import Any

READ_UNIT_BYTES = 4096
WRITE_UNIT_BYTES = 1024
_WRITES = ("PutItem", "UpdateItem", "DeleteItem")


def value_size(value: dict[str, Any]) -> int:
    """The billed size of one attribute value (its name not included)."""
    kind, inner = next(iter(value.items()))
    if kind == "S":
        return len(str(inner).encode("utf-8"))
    if kind == "N":
        return number_size(str(inner))
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in inner)
    if kind == "NS":
        return sum(number_size(n) for n in inner)
    if kind == "BS":
        return sum(len(b) for b in inner)
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + value_size(v) + 1 for k, v in inner.items())
    raise ValueError(f"unknown attribute type {kind}")


def number_size(text: str) -> int:
    digits = format(abs(Decimal(text)), "f").replace(".", "").strip("0")
    return math.ceil(len(digits) / 2) + 1


def item_size(item: dict[str, Any] | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())


def read_units(size: int, *, consistent: bool) -> float:
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return units if consistent else units / 2


def write_units(size: int) -> int:
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


class UnitMeter:
    """Counts the read and write units of every call `client` makes (thread-safe);
    `peek` is a second client on the same table, used to read sizes without counting."""

    def __init__(self, client: Any, peek: Any) -> None:
        self._peek = peek
        self._lock = threading.Lock()
        self.units: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
        client.meta.events.register("provide-client-params.dynamodb.*", self._before)
        client.meta.events.register("after-call.dynamodb.*", self._after)

    @property
    def reads(self) -> float:
        return sum(u[0] for u in self.units.values())

    @property
    def writes(self) -> float:
        return sum(u[1] for u in self.units.values())

    def reset(self) -> None:
        with self._lock:
            self.units.clear()

    def _add(self, operation: str, reads: float = 0.0, writes: float = 0.0) -> None:
        with self._lock:
            entry = self.units[operation]
            entry[0] += reads
            entry[1] += writes
            entry[2] += 1

    def _before(
        self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        operation = model.name
        consistent = bool(params.get("ConsistentRead", False))
        if operation == "GetItem":
            size = item_size(self._item(params["TableName"], params["Key"]))
            self._add(operation, reads=read_units(size, consistent=consistent))
        elif operation == "Query":
            size = sum(item_size(item) for item in self._query_items(params))
            self._add(operation, reads=read_units(size, consistent=consistent))
        elif operation in _WRITES:
            table, key = params["TableName"], params.get("Key") or _key_of(params["Item"])
            before = item_size(self._item(table, key))
            context["meter_write"] = (operation, table, key, before, params.get("Item"))
        elif operation == "BatchWriteItem":
            self._batch(params)

    def _after(self, context: dict[str, Any], **_: Any) -> None:
        """A write's units, once its item's size after it is known (even when it failed)."""
        pending = context.pop("meter_write", None)
        if pending is None:
            return
        operation, table, key, before, new_item = pending
        if operation == "PutItem":
            after = item_size(new_item)
        elif operation == "UpdateItem":
            after = item_size(self._item(table, key))
        else:
            after = 0
        self._add(operation, writes=write_units(max(before, after)))

    def _batch(self, params: dict[str, Any]) -> None:
        for table, requests in params["RequestItems"].items():
            for request in requests:
                if "PutRequest" in request:
                    item = request["PutRequest"]["Item"]
                    before = item_size(self._item(table, _key_of(item)))
                    units = write_units(max(before, item_size(item)))
                else:
                    units = write_units(
                        item_size(self._item(table, request["DeleteRequest"]["Key"]))
                    )
                self._add("BatchWriteItem", writes=units)

    def _item(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        got = self._peek.get_item(TableName=table, Key=key, ConsistentRead=True)
        item: dict[str, Any] | None = got.get("Item")
        return item

    def _query_items(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The items the Query reads (whole, before its filter), as it will read them."""
        condition = params["KeyConditionExpression"]
        used = set(re.findall(r"[:#][A-Za-z0-9_]+", condition))
        kwargs: dict[str, Any] = {
            "TableName": params["TableName"],
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": {
                k: v for k, v in params["ExpressionAttributeValues"].items() if k in used
            },
            "ConsistentRead": True,
        }
        names = {k: v for k, v in params.get("ExpressionAttributeNames", {}).items() if k in used}
        if names:
            kwargs["ExpressionAttributeNames"] = names
        for optional in ("Limit", "ExclusiveStartKey", "ScanIndexForward"):
            if optional in params:
                kwargs[optional] = params[optional]
        items: list[dict[str, Any]] = self._peek.query(**kwargs).get("Items", [])
        return items


def _key_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"pk": item["pk"], "sk": item["sk"]}
