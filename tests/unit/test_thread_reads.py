"""A thread's reads cost what they return (moto DynamoDB): a run reads its history newest
first only as far as its budget can use, and sends exactly what reading the whole thread
sent; a page reads only the runs holding its messages, also in threads stored before
messages were numbered. The read units are priced as DynamoDB bills them (unit_meter.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import partial
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from benchmarks.unit_meter import UnitMeter
from streaming_proxy import threadreads, threads
from streaming_proxy.history import Messages, pack, shortfall, trim, unpack
from streaming_proxy.runs import for_provider
from streaming_proxy.tablekeys import MSG, index_sk, now_epoch, thread_pk
from streaming_proxy.threads import RunStart, ThreadStore

from .conftest import MOTO_TABLE

APP = "app"
SYSTEM = [{"role": "system", "content": "Be brief."}]
NEW = [{"role": "user", "content": "and now?"}]
WORDS = "lorem ipsum dolor sit amet " * 400
_ids = itertools.count()


@pytest.fixture
def db(aws_env: None) -> Any:
    return boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def store(db: Any) -> ThreadStore:
    return ThreadStore(db, MOTO_TABLE)


@pytest.fixture
def small_items(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Items of 300 characters, so that runs span several items and pages cut runs."""
    monkeypatch.setattr(threads, "pack", partial(pack, item_chars=300))
    yield


def start(thread_id: str, run: int) -> RunStart:
    return RunStart(thread_id, f"run_{run:04d}", "st_1", run == 0, now_epoch() + 600, 3600)


def write(store: ThreadStore, runs: list[Messages], *, legacy: int = 0) -> str:
    """A new thread holding `runs`; the first `legacy` of them stored as before messages were
    numbered (no `first` on their items, no `INDEX#` entry)."""
    thread_id = f"thread_reads{next(_ids):06d}"
    for number, messages in enumerate(runs):
        before = store.meta(APP, thread_id)
        store.start_run(APP, start(thread_id, number))
        assert store.finish_run(APP, start(thread_id, number), messages, "done")
        if number < legacy:
            _unnumber(store, thread_id, f"run_{number:04d}", before)
    return thread_id


def _unnumber(store: ThreadStore, thread_id: str, run: str, before: Any) -> None:
    db, pk = store._db, thread_pk(APP, thread_id)
    for item in raw_items(db, pk):
        if item["run"]["S"] == run:
            key = {"pk": item["pk"], "sk": item["sk"]}
            db.update_item(TableName=MOTO_TABLE, Key=key, UpdateExpression="REMOVE #f",
                           ExpressionAttributeNames={"#f": "first"})  # fmt: skip
    number = 0 if before is None else before.message_count
    db.delete_item(TableName=MOTO_TABLE, Key={"pk": pk, "sk": {"S": index_sk(number)}})


def raw_items(db: Any, pk: Any) -> list[dict[str, Any]]:
    args: dict[str, Any] = {
        "TableName": MOTO_TABLE,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :msg)",
        "ExpressionAttributeValues": {":pk": pk, ":msg": {"S": MSG}},
        "ConsistentRead": True,
    }
    items: list[dict[str, Any]] = []
    while True:
        page = db.query(**args)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        args["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def read_all(db: Any, thread_id: str) -> Messages:
    """The reference: every message item read and decoded, as the store did before."""
    now = now_epoch()
    runs: dict[str, list[dict[str, Any]]] = {}
    for item in raw_items(db, thread_pk(APP, thread_id)):
        if int(item.get("expiresAt", {}).get("N", now + 1)) >= now:
            runs.setdefault(item["run"]["S"], []).append(item)
    datas = []
    for items in runs.values():
        if len(items) == int(items[0]["parts"]["N"]):
            datas.append("".join(item["data"]["S"] for item in items))
    return unpack(datas)


def expire(db: Any, thread_id: str, run: int, *, items: int = 1) -> None:
    """The run's first `items` items past their TTL (DynamoDB deletes them some time later)."""
    found = raw_items(db, thread_pk(APP, thread_id))
    for item in [i for i in found if i["run"]["S"] == f"run_{run:04d}"][:items]:
        db.update_item(TableName=MOTO_TABLE, Key={"pk": item["pk"], "sk": item["sk"]},
                       UpdateExpression="SET expiresAt = :past",
                       ExpressionAttributeValues={":past": {"N": "1"}})  # fmt: skip


# -- the same history as reading everything --------------------------------------------------


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    role = draw(st.sampled_from(["user", "user", "assistant", "tool"]))
    message: dict[str, Any] = {"role": role, "content": WORDS[: draw(st.integers(0, 2_000))]}
    if role == "assistant" and draw(st.integers(0, 4)) == 0:
        message["status"] = "failed"  # with empty content, left out of provider requests
    return message


RUNS = st.lists(st.lists(messages(), max_size=4), max_size=9)
PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(
    runs=RUNS,
    budget=st.integers(0, 6_000),
    legacy=st.integers(0, 9),
    expired=st.sets(st.integers(0, 8), max_size=3),
    first_items=st.integers(1, 8),
)
def test_a_run_sends_exactly_what_reading_the_whole_thread_sent(
    db: Any,
    store: ThreadStore,
    small_items: None,
    monkeypatch: pytest.MonkeyPatch,
    runs: list[Messages],
    budget: int,
    legacy: int,
    expired: set[int],
    first_items: int,
) -> None:
    monkeypatch.setattr(threadreads, "FIRST_ITEMS", first_items)
    thread_id = write(store, runs, legacy=legacy)
    for run in expired:
        if run < len(runs) and runs[run]:
            expire(db, thread_id, run)
    old = trim(SYSTEM, for_provider(read_all(db, thread_id)), NEW, budget)

    def short(recent: Messages) -> int:
        return shortfall(SYSTEM, for_provider(recent), NEW, budget)

    recent = store.recent(APP, thread_id, short)
    new = trim(SYSTEM, for_provider(recent.messages), NEW, budget)
    assert (new.messages, new.tokens) == (old.messages, old.tokens)
    clean = not expired and not legacy and not any(m.get("status") for r in runs for m in r)
    if clean:  # otherwise older messages are counted by number: aged out or marked ones too
        assert new.dropped + recent.older == old.dropped


@PROPERTY
@given(
    runs=RUNS,
    legacy=st.integers(0, 9),
    cursor=st.integers(0, 50),
    limit=st.integers(1, 20),
    first_items=st.integers(1, 8),
)
def test_a_page_is_the_slice_of_the_whole_thread_also_for_threads_stored_before(
    db: Any,
    store: ThreadStore,
    small_items: None,
    monkeypatch: pytest.MonkeyPatch,
    runs: list[Messages],
    legacy: int,
    cursor: int,
    limit: int,
    first_items: int,
) -> None:
    monkeypatch.setattr(threadreads, "FIRST_ITEMS", first_items)
    thread_id = write(store, runs, legacy=legacy)
    everything = read_all(db, thread_id)
    meta = store.meta(APP, thread_id)
    if meta is None:
        assert not runs
        return
    page = store.page(APP, meta, cursor, limit)
    assert page.messages == everything[cursor : cursor + limit]
    more = cursor + limit < len(everything)
    assert page.next_cursor == (cursor + limit if more else None)


def test_numbers_stay_when_old_runs_age_out(db: Any, store: ThreadStore) -> None:
    def turn(n: int) -> Messages:
        return [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]

    thread_id = write(store, [turn(0), turn(1), turn(2)])
    expire(db, thread_id, 0, items=100)  # the first run past its TTL, not yet deleted
    meta = store.meta(APP, thread_id)
    assert meta is not None
    first = store.page(APP, meta, 0, 3)  # starts at the first message still kept
    assert [m["content"] for m in first.messages] == ["q1", "a1", "q2"]
    assert first.next_cursor == 5  # message 5 is a2, numbered as when it was written
    last = store.page(APP, meta, 5, 3)
    assert [m["content"] for m in last.messages] == ["a2"] and last.next_cursor is None


# -- what the reads cost ---------------------------------------------------------------------


def chat(turns: int, chars: int) -> list[Messages]:
    """`turns` runs of a question and an answer, `chars` characters a turn."""
    half = chars // 2
    return [
        [{"role": "user", "content": WORDS[:half]}, {"role": "assistant", "content": WORDS[:half]}]
        for _ in range(turns)
    ]


def units(meter: UnitMeter, read: Any) -> float:
    meter.reset()
    read()
    return meter.reads


def test_a_long_thread_costs_a_run_and_a_page_what_they_use(db: Any, store: ThreadStore) -> None:
    """200 turns of 2 KB: before, a run and any page read all 200 items (~100 read units);
    now a run reads the turns its budget (16,000 tokens) holds and a page its 50 messages."""
    thread_id = write(store, chat(200, 2_000))
    meter = UnitMeter(db, boto3.client("dynamodb", region_name="us-east-1"))
    meta = store.meta(APP, thread_id)
    assert meta is not None and meta.message_count == 400

    before = units(meter, lambda: raw_items(db, thread_pk(APP, thread_id)))
    short = partial(lambda b, r: shortfall(SYSTEM, r, NEW, b), 16_000)
    run = units(meter, lambda: store.recent(APP, thread_id, short))
    first = units(meter, lambda: store.page(APP, meta, 0, 50))
    last = units(meter, lambda: store.page(APP, meta, 350, 50))
    sent = trim(SYSTEM, store.recent(APP, thread_id, short).messages, NEW, 16_000)
    kept = len(sent.messages) - 2
    print(f"thread read units: before {before}, run {run} ({kept} messages), pages {first} {last}")
    assert before >= 100  # the whole thread, consistent: 1 unit per 4 KB
    assert kept >= 60 and run <= before / 4  # ~35 of 200 items, a few queries' rounding
    assert first <= 16 and last <= 16  # 25 items of 2.1 KB (13 units), plus rounding
    assert store.page(APP, meta, 350, 50).messages[-1]["role"] == "assistant"


# -- the stopping rule on its own (no table: every cut of every history) ---------------------


SMALL_TURN = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
BIG_TURN = [
    {"role": "user", "content": "lorem ipsum " * 100},
    {"role": "assistant", "content": "dolor sit " * 100},
]


@settings(max_examples=300, deadline=None)
@given(history=st.lists(messages(), max_size=30), data=st.data(), budget=st.integers(0, 6_000))
@example(history=SMALL_TURN + BIG_TURN, data=None, budget=606)
def test_a_reader_may_stop_once_the_shortfall_is_0_at_any_cut(
    history: Messages, data: st.DataObject | None, budget: int
) -> None:
    """Whatever the newest messages read so far (`history[cut:]`), a shortfall of 0 means the
    older ones cannot change what the run sends; more than 0 means the read is not over.
    The example: the newest turn fills most of the budget, and an older small one still fits."""
    full = for_provider(history)
    cut = data.draw(st.integers(0, len(full))) if data is not None else 2
    recent = full[cut:]
    whole = trim(SYSTEM, full, NEW, budget)
    short = shortfall(SYSTEM, recent, NEW, budget)
    if short == 0:
        part = trim(SYSTEM, recent, NEW, budget)
        assert (part.messages, part.tokens) == (whole.messages, whole.tokens)
    else:
        assert short > 0 and trim(SYSTEM, recent, NEW, budget).dropped == 0
