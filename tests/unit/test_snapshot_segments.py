"""Snapshot text in append-only segments (moto DynamoDB): the record the cancel check reads
stays small, every write is bounded, and any reader gets the exact text up to the pointer."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
import pytest

from benchmarks.unit_meter import UnitMeter, item_size
from streaming_proxy import snapshots
from streaming_proxy.blocking import BlockingCalls
from streaming_proxy.recorder import StreamRecorder
from streaming_proxy.snapshots import MAX_SNAPSHOT_BYTES, SEGMENT_BYTES, cut, tail
from streaming_proxy.streams import StreamRecord, StreamStore
from streaming_proxy.tablekeys import stream_key
from tests.unit.conftest import MOTO_TABLE

USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "estimated": False}
MIXED = "aé€👋 "  # 1, 2, 3 and 4 UTF-8 bytes, and a space


@pytest.fixture
def db(aws_env: None) -> Any:
    return boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def store(db: Any) -> StreamStore:
    store = StreamStore(db, MOTO_TABLE)
    store.create(StreamRecord("st_1", "app1", "onLlm", ["c"]))
    return store


def items(db: Any) -> list[dict[str, Any]]:
    return sorted(
        db.scan(TableName=MOTO_TABLE)["Items"], key=lambda i: (i["pk"]["S"], i["sk"]["S"])
    )


def segments(db: Any) -> list[dict[str, Any]]:
    return [item for item in items(db) if item["sk"]["S"].startswith("TEXT#")]


def test_the_cancel_check_reads_the_small_record_only_however_long_the_text(
    db: Any, store: StreamStore
) -> None:
    text = MIXED * 40_000  # 440 KB
    for end in range(0, len(text) + 1, 40_000):
        store.save_progress("st_1", text[:end], end, stored=max(0, end - 40_000))
    meta = db.get_item(TableName=MOTO_TABLE, Key=stream_key("st_1"))["Item"]
    assert "text" not in meta and item_size(meta) < 400  # status, flags, names, pointer
    meter = UnitMeter(db, boto3.client("dynamodb", region_name="us-east-1"))
    read: list[dict[str, Any]] = []
    db.meta.events.register(
        "provide-client-params.dynamodb.GetItem", lambda params, **_: read.append(params)
    )
    assert store.poll("st_1").cancel is False
    assert [p["Key"]["sk"]["S"] for p in read] == ["META"]
    assert meter.reads == 0.5  # one eventually consistent read of under 4 KB


@pytest.mark.parametrize("limit", [4, 5, 6, 7, 11])
def test_segments_never_split_a_character_and_join_back_exactly(
    limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "SEGMENT_BYTES", limit)
    text = MIXED * 30
    for start in range(0, 12):
        pieces = cut(text, start)
        assert "".join(piece for _, piece in pieces) == text[start:]
        assert all(0 < len(piece.encode("utf-8")) <= limit for _, piece in pieces)
        # Each piece starts where the one before it ended.
        assert [pos for pos, _ in pieces] == [
            start + sum(len(p) for _, p in pieces[:i]) for i in range(len(pieces))
        ]


def test_a_text_written_in_many_small_steps_reads_back_exactly(
    db: Any, store: StreamStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "SEGMENT_BYTES", 9)  # most steps split at a character edge
    text = (MIXED * 60)[:-1]
    stored = 0
    for seq, end in enumerate([*range(0, len(text), 13), len(text)]):
        assert store.save_progress("st_1", text[:end], seq, stored=stored)
        stored = end
        record = store.get("st_1", text=True)
        assert record is not None and (record.text, record.last_seq) == (text[:end], seq)
    assert all(len(s["text"]["S"].encode("utf-8")) <= 9 for s in segments(db))
    assert store.save_final(
        "st_1", text, 99, "done", finish_reason="stop", usage=USAGE, stored=stored
    )
    record = store.get("st_1", text=True)
    assert record is not None
    assert (record.text, record.last_seq, record.status, record.text_truncated) == (
        text,
        99,
        "done",
        False,
    )


def test_a_text_past_the_bound_keeps_its_tail_and_says_so(db: Any, store: StreamStore) -> None:
    text = MIXED * 40_000  # 440 KB, written as 60 KB segments in 40,000-character steps
    stored = 0
    for end in [*range(40_000, len(text), 40_000), len(text)]:
        store.save_progress("st_1", text[:end], end, stored=stored)
        stored = end
    assert all(len(s["text"]["S"].encode("utf-8")) <= SEGMENT_BYTES for s in segments(db))
    record = store.get("st_1", text=True)
    assert record is not None and record.text_truncated
    assert record.text == tail(text)[0] and text.endswith(record.text)
    assert MAX_SNAPSHOT_BYTES - 4 < len(record.text.encode("utf-8")) <= MAX_SNAPSHOT_BYTES


def test_segments_past_the_pointer_are_invisible_and_a_longer_rewrite_adds_nothing_twice(
    db: Any, store: StreamStore
) -> None:
    """A write whose segments landed but whose pointer did not (or did not yet): readers
    see the text up to the pointer only; the retry rewrites the same start, longer."""
    store.save_progress("st_1", "one ", 1)
    segment_store = snapshots.SegmentStore(db, MOTO_TABLE)
    segment_store.write("st_1", "one two ", 4, 0)  # the pointer update then failed
    record = store.get("st_1", text=True)
    assert record is not None and (record.text, record.last_seq) == ("one ", 1)
    assert store.save_progress("st_1", "one two three", 3, stored=4)  # retried, longer
    record = store.get("st_1", text=True)
    assert record is not None and (record.text, record.last_seq) == ("one two three", 3)
    assert [s["text"]["S"] for s in segments(db)] == ["one ", "two three"]


def test_a_late_progress_write_after_the_final_one_changes_nothing(
    db: Any, store: StreamStore
) -> None:
    store.save_progress("st_1", "the whole", 5)
    store.save_final(
        "st_1", "the whole answer", 9, "done", finish_reason="stop", usage=USAGE, stored=9
    )
    before = items(db)
    # Late, from any offset: the pointer is final, and no segment is ever shortened (one
    # at a new start may appear: the same text again, below the pointer, read once).
    assert store.save_progress("st_1", "the whole", 5) is False
    assert store.save_progress("st_1", "the whole", 5, stored=4) is False
    after = items(db)
    assert [item for item in after if item in before] == before
    record = store.get("st_1", text=True)
    assert record is not None and (record.text, record.last_seq) == ("the whole answer", 9)
    # A final write of another status never replaces the recorded one; a retry of it lands.
    assert not store.save_final("st_1", "x", 1, "failed", finish_reason="error", usage=USAGE)
    assert store.save_final(
        "st_1", "the whole answer", 9, "done", finish_reason="stop", usage=USAGE, stored=9
    )


async def test_each_snapshot_writes_only_what_was_added(db: Any, store: StreamStore) -> None:
    """100 snapshots growing the text to 50 KB: every write stays one unit (the record
    rewrite it replaces cost up to 50), and the final text is exact."""
    meter = UnitMeter(db, boto3.client("dynamodb", region_name="us-east-1"))
    recorder = StreamRecorder(store, "st_1", BlockingCalls(2, "t"))
    step = "x" * 499 + "\n"
    text = ""
    for seq in range(100):
        text += step
        recorder.snapshot_soon(text, seq)
        await asyncio.sleep(0)
        await asyncio.wait_for(_settled(recorder), 5)
    await recorder.final(text + "end", 100, "done", "stop", USAGE)
    assert recorder.final_written
    writes = meter.units["PutItem"][1] + meter.units["UpdateItem"][1]
    calls = meter.units["PutItem"][2] + meter.units["UpdateItem"][2]
    assert calls == 202 and writes == calls  # one unit each
    record = store.get("st_1", text=True)
    assert record is not None and record.text == text + "end"


async def _settled(recorder: StreamRecorder) -> None:
    if recorder._snapshot is not None:
        await recorder._snapshot


def test_a_record_written_before_the_segments_still_resumes_with_its_text(db: Any) -> None:
    """Streams recorded by the previous release (text in the record) for their day of TTL."""
    db.put_item(
        TableName=MOTO_TABLE,
        Item={
            **stream_key("st_old"),
            "app": {"S": "app1"},
            "actionName": {"S": "onLlm"},
            "channels": {"S": '["c"]'},
            "status": {"S": "done"},
            "lastSeq": {"N": "4"},
            "text": {"S": "old text"},
            "textTruncated": {"BOOL": False},
            "createdAt": {"N": "1.0"},
        },
    )
    record = StreamStore(db, MOTO_TABLE).get("st_old", text=True)
    assert record is not None and (record.text, record.last_seq) == ("old text", 4)
