"""A stream's text as append-only segments beside its record (architecture.md, decision 27).

The text lives in items `pk=STREAM#<id>, sk=TEXT#<start>` (`start`: the offset, in
characters, of the segment's first character), each at most SEGMENT_BYTES of UTF-8, so a
write costs what was added since the last one, never the whole text again. The record
(`META`) holds the pointer only: `textChars`, how many characters of text are published.

Writes are ordered so a reader never sees a gap or a duplicate: the segments first, the
pointer after they exist, and a reader takes the characters below the pointer only. A
segment is only ever replaced by a longer one at the same start (the text only grows, so
that is the same text and more), which a retried or late write cannot shrink.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .tablekeys import STREAM, query_items

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TEXT = "TEXT#"
# UTF-8 bytes of text per segment: with its keys, an item under 64 KB (64 write units).
SEGMENT_BYTES = 60_000
# A snapshot keeps the tail past this many bytes (`textTruncated`), as before segments.
MAX_SNAPSHOT_BYTES = 300_000
_START_DIGITS = 10
_PAGE_ITEMS = 100


def segment_key(stream_id: str, start: int) -> dict[str, Any]:
    return {"pk": {"S": STREAM + stream_id}, "sk": {"S": f"{TEXT}{start:0{_START_DIGITS}d}"}}


def cut(text: str, start: int, limit: int | None = None) -> list[tuple[int, str]]:
    """`text[start:]` as (start, piece) segments of at most `limit` (SEGMENT_BYTES) UTF-8
    bytes each, cut between characters (a character is never split over two segments)."""
    limit = limit or SEGMENT_BYTES
    pieces: list[tuple[int, str]] = []
    pos = start
    while pos < len(text):
        piece = text[pos : pos + limit]  # at least one byte a character: never too short
        encoded = piece.encode("utf-8")
        if len(encoded) > limit:
            piece = encoded[:limit].decode("utf-8", errors="ignore")  # drops a cut character
        pieces.append((pos, piece))
        pos += len(piece)
    return pieces


def assemble(segments: list[tuple[int, str]], end: int) -> tuple[str, bool]:
    """The text below `end` from segments in start order, and whether it misses a head.

    Segments may overlap (a longer rewrite at the same start); a gap (never written that
    way) keeps what follows it and counts as a missing head.
    """
    parts: list[str] = []
    pos: int | None = None
    missing_head = bool(segments) and segments[0][0] > 0
    for start, piece in segments:
        if pos is None or start > pos:
            missing_head = missing_head or pos is not None
            parts, pos = [], start
        if start + len(piece) > pos:
            parts.append(piece[pos - start :])
            pos = start + len(piece)
    text = "".join(parts)
    if pos is not None and pos > end:
        text = text[: len(text) - (pos - end)]
    return text, missing_head


def tail(text: str, max_bytes: int = MAX_SNAPSHOT_BYTES) -> tuple[str, bool]:
    """The text, or its last `max_bytes` UTF-8 bytes (cut between characters), and whether
    it was cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[-max_bytes:].decode("utf-8", errors="ignore"), True


class SegmentStore:
    """Writes and reads one table's text segments; blocking (call via a thread)."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    def write(self, stream_id: str, text: str, start: int, expires: int) -> None:
        """Put `text[start:]` as segments; one already as long or longer at a start is kept."""
        for pos, piece in cut(text, start):
            try:
                self._db.put_item(
                    TableName=self._table,
                    Item={
                        **segment_key(stream_id, pos),
                        "text": {"S": piece},
                        "chars": {"N": str(len(piece))},
                        "expiresAt": {"N": str(expires)},
                    },
                    ConditionExpression="attribute_not_exists(pk) OR #chars < :chars",
                    ExpressionAttributeNames={"#chars": "chars"},
                    ExpressionAttributeValues={":chars": {"N": str(len(piece))}},
                )
            except self._db.exceptions.ConditionalCheckFailedException:
                continue  # one as long or longer is there: it holds this text already

    def read(
        self, stream_id: str, end: int, max_bytes: int = MAX_SNAPSHOT_BYTES
    ) -> tuple[str, bool]:
        """The text below `end` (the record's pointer): its tail past `max_bytes`, and
        whether it was cut. Reads the newest segments only, as far back as the tail needs."""
        if end <= 0:
            return "", False
        segments: list[tuple[int, str]] = []
        size = 0
        for item in self._newest_first(stream_id, end):
            piece = item["text"]["S"]
            segments.append((int(item["sk"]["S"][len(TEXT) :]), piece))
            size += len(piece.encode("utf-8"))
            if size >= max_bytes:
                break
        segments.reverse()
        text, missing_head = assemble(segments, end)
        text, cut_off = tail(text, max_bytes)
        return text, missing_head or cut_off

    def _newest_first(self, stream_id: str, end: int) -> Iterator[dict[str, Any]]:
        first, last = segment_key(stream_id, 0), segment_key(stream_id, end - 1)
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": {
                ":pk": first["pk"],
                ":first": first["sk"],
                ":last": last["sk"],
            },
            "ScanIndexForward": False,
            "ConsistentRead": True,
            # A page reads (and bills) every item it returns: no more than a tail needs.
            "Limit": _PAGE_ITEMS,
        }
        yield from query_items(self._db, **kwargs)
