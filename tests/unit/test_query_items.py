"""tablekeys.query_items: every item of a Query, page after page, read only as far as used."""

from __future__ import annotations

from itertools import islice
from typing import Any

from streaming_proxy.tablekeys import query_items


class Pages:
    """A client whose query answers `items` in pages of `size`, recording each call."""

    def __init__(self, items: list[int], size: int) -> None:
        self.items, self.size = items, size
        self.calls: list[dict[str, Any]] = []

    def query(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        start = kwargs.get("ExclusiveStartKey", {"at": 0})["at"]
        page: dict[str, Any] = {"Items": self.items[start : start + self.size]}
        if start + self.size < len(self.items):
            page["LastEvaluatedKey"] = {"at": start + self.size}
        return page


def test_every_page_is_read_in_order_with_the_query_unchanged() -> None:
    db = Pages(list(range(7)), 3)
    assert list(query_items(db, TableName="t", Limit=3)) == list(range(7))  # type: ignore[arg-type]
    assert [c.get("ExclusiveStartKey") for c in db.calls] == [None, {"at": 3}, {"at": 6}]
    assert all(c["TableName"] == "t" and c["Limit"] == 3 for c in db.calls)


def test_no_page_is_read_past_what_the_caller_takes() -> None:
    db = Pages(list(range(100)), 10)
    assert list(islice(query_items(db, TableName="t"), 11)) == list(range(11))  # type: ignore[arg-type]
    assert len(db.calls) == 2
