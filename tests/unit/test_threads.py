"""Threads without a stack: the item codec, history trimming, what a run stores, and the
store's lease and transaction rules on moto's DynamoDB."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from streaming_proxy.errors import Conflict, NotFound
from streaming_proxy.history import pack, trim, unpack
from streaming_proxy.jobs import StreamJob, ThreadRun
from streaming_proxy.outcome import StreamOutcome
from streaming_proxy.runs import for_provider, said
from streaming_proxy.tablekeys import thread_pk
from streaming_proxy.threads import RunStart, ThreadStore
from streaming_proxy.tokens import estimate_prompt_tokens

from .conftest import MOTO_TABLE

SYSTEM = {"role": "system", "content": "Be brief."}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def tool_round(call_id: str) -> list[dict[str, Any]]:
    call = {"id": call_id, "type": "function", "function": {"name": "ui_pick", "arguments": "{}"}}
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"message": "red"}'},
    ]


# -- the codec -----------------------------------------------------------------------------------


def test_a_long_message_spans_items_and_reads_back_whole() -> None:
    messages = [user("short"), assistant("é" * 50_000 + " end"), user("last")]
    datas = pack(messages, item_chars=10_000)
    assert len(datas) > 5 and all(len(d) <= 10_000 for d in datas)
    assert all(d.isascii() for d in datas)  # a character is a byte: the size bound holds
    assert unpack(datas) == messages


def test_runs_packed_apart_read_back_in_order() -> None:
    first, second = [user("a"), assistant("b")], [user("c"), assistant("d")]
    assert unpack([*pack(first, 7), *pack(second, 7)]) == [*first, *second]


# -- trimming ------------------------------------------------------------------------------------


def test_a_small_budget_keeps_instructions_new_messages_and_whole_tool_rounds() -> None:
    old = [user("old question " * 40), assistant("old answer " * 40)]
    tools = [user("pick"), *tool_round("call_1"), assistant("It is red.")]
    new = [user("why?")]
    kept_cost = estimate_prompt_tokens([SYSTEM, *tools, *new])
    trimmed = trim([SYSTEM], [*old, *tools], new, budget=kept_cost + 5)
    assert trimmed.messages == [SYSTEM, *tools, *new]
    assert trimmed.dropped == 2 and trimmed.tokens == kept_cost
    # One token less and the tool turn goes whole: never a call without its result.
    tighter = trim([SYSTEM], [*old, *tools], new, budget=kept_cost - 1)
    assert tighter.messages == [SYSTEM, *new] and tighter.dropped == 6


def test_instructions_and_new_messages_stay_even_over_budget() -> None:
    trimmed = trim([SYSTEM], [user("a"), assistant("b")], [user("x " * 500)], budget=10)
    assert trimmed.messages == [SYSTEM, user("x " * 500)] and trimmed.dropped == 2


def test_a_big_budget_keeps_everything() -> None:
    history = [user("a"), *tool_round("c1"), assistant("b")]
    trimmed = trim([], history, [user("n")], budget=100_000)
    assert trimmed.messages == [*history, user("n")] and trimmed.dropped == 0


# -- what a run stores ---------------------------------------------------------------------------


def job(added: list[dict[str, Any]]) -> StreamJob:
    thread = ThreadRun(
        thread_id="thread_abcdefgh",
        run_id="run_abcdefgh",
        new=False,
        lease_until=0,
        ttl_seconds=60,
        added=len(added),
    )
    return StreamJob(
        stream_id="st_1", app_id="dev", kind="assistants", action_name="onRun",
        payload={"messages": added}, flush_interval_ms=0, thread=thread,
    )  # fmt: skip


def test_a_run_stores_its_question_tool_rounds_and_final_answer() -> None:
    rounds = tool_round("call_1")
    rounds[0]["content"] = "Let me pick. "
    outcome = StreamOutcome(text="Let me pick. It is red.", started=True)
    stored = said(job([user("pick")]), outcome, rounds)
    assert stored == [user("pick"), *rounds, assistant("It is red.")]


def test_a_detached_run_stores_only_its_new_messages_carried_once_in_its_event() -> None:
    question = user("a long question " * 200)
    sent = [{"role": "system", "content": "be brief"}, user("old"), assistant("old answer")]
    base = job([question])
    run = base.model_copy(update={"payload": base.payload.model_validate(
        {"messages": [*sent, question]}
    )})  # fmt: skip
    event = run.to_event()
    assert json.dumps(event).count(question["content"]) == 1
    outcome = StreamOutcome(text="Short.", started=True)
    assert said(StreamJob.from_event(event), outcome, []) == [question, assistant("Short.")]


def test_a_cancelled_run_stores_what_was_said_marked() -> None:
    outcome = StreamOutcome(text="Half an ans", finish_reason="cancelled", started=True)
    stored = said(job([user("q")]), outcome, [])
    assert stored == [user("q"), {**assistant("Half an ans"), "status": "cancelled"}]


def test_a_run_that_failed_before_the_provider_spoke_stores_nothing() -> None:
    assert said(job([user("q")]), StreamOutcome(finish_reason="error"), []) == []


def test_the_provider_gets_no_marks_and_no_empty_failed_answers() -> None:
    stored = [
        user("q"),
        {**assistant(""), "status": "failed"},
        user("again"),
        {**assistant("partial"), "status": "cancelled"},
    ]
    assert for_provider(stored) == [user("q"), user("again"), assistant("partial")]


# -- the store -----------------------------------------------------------------------------------


@pytest.fixture
def store(aws_env: None) -> Iterator[ThreadStore]:
    yield ThreadStore(boto3.client("dynamodb", region_name="us-east-1"), MOTO_TABLE)


def start(
    run: str, *, new: bool = False, lease: int = 600, channels: tuple[str, ...] = ()
) -> RunStart:
    return RunStart(
        thread_id="thread_testthread1", run_id=run, stream_id="st_" + run, new=new,
        lease_until=int(time.time()) + lease, ttl_seconds=3600, channels=channels,
    )  # fmt: skip


def everything(store: ThreadStore) -> list[dict[str, Any]]:
    """Every message of the test thread still kept, in one page."""
    meta = store.meta("app", "thread_testthread1")
    return [] if meta is None else store.page("app", meta, 0, 10_000).messages


def test_one_run_at_a_time_and_the_next_after_it_ends(store: ThreadStore) -> None:
    store.start_run("app", start("run_a", new=True, channels=("user-1",)))
    with pytest.raises(Conflict):
        store.start_run("app", start("run_b"))
    assert store.finish_run("app", start("run_a"), [user("q"), assistant("a")], "done")
    store.start_run("app", start("run_b", channels=("user-1", "tab|c1")))
    assert store.finish_run("app", start("run_b"), [user("q2")], "cancelled")
    assert everything(store) == [user("q"), assistant("a"), user("q2")]
    run = store.run("app", "thread_testthread1", "run_b")
    assert run is not None and (run.stream_id, run.status) == ("st_run_b", "cancelled")
    meta = store.meta("app", "thread_testthread1")
    assert meta is not None and meta.message_count == 3 and meta.active_run is None
    # Every channel its runs published to, and no other.
    assert store.published_to("app", meta, {"tab|c1"})
    assert store.published_to("app", meta, {"user-1", "user-2"})
    assert not store.published_to("app", meta, {"user-2"})


def test_a_crashed_runs_lease_expires_and_its_late_finish_writes_nothing(
    store: ThreadStore,
) -> None:
    store.start_run("app", start("run_dead", new=True, lease=-5))  # its lease is over
    store.start_run("app", start("run_next"))
    assert not store.finish_run("app", start("run_dead"), [user("late")], "done")
    assert store.finish_run("app", start("run_next"), [user("on time")], "done")
    assert everything(store) == [user("on time")]


def test_another_apps_thread_is_not_found_and_a_new_id_is_never_reused(
    store: ThreadStore,
) -> None:
    store.start_run("app", start("run_a", new=True))
    with pytest.raises(NotFound):
        store.start_run("other", start("run_b"))
    assert store.meta("other", "thread_testthread1") is None
    with pytest.raises(Conflict):  # the same new id again: refused, never overwritten
        store.start_run("app", start("run_c", new=True))


def test_long_answers_span_items_and_partly_expired_runs_are_left_out(
    store: ThreadStore,
) -> None:
    long = assistant("word " * 40_000)  # 200 KB: four items
    store.start_run("app", start("run_a", new=True))
    store.finish_run("app", start("run_a"), [user("q"), long], "done")
    store.start_run("app", start("run_b"))
    store.finish_run("app", start("run_b"), [user("q2"), assistant("short")], "done")
    assert everything(store) == [
        user("q"),
        long,
        user("q2"),
        assistant("short"),
    ]
    db = boto3.client("dynamodb", region_name="us-east-1")
    items = db.query(
        TableName=MOTO_TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": thread_pk("app", "thread_testthread1")},
    )["Items"]
    assert max(len(json.dumps(item)) for item in items) < 100_000
    first = next(i for i in items if i.get("run", {}).get("S") == "run_a")
    db.update_item(  # one of run_a's items past its TTL (DynamoDB deletes it some time later)
        TableName=MOTO_TABLE,
        Key={"pk": first["pk"], "sk": first["sk"]},
        UpdateExpression="SET expiresAt = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )
    assert everything(store) == [user("q2"), assistant("short")]


def test_delete_erases_everything_but_not_while_a_run_holds_it(store: ThreadStore) -> None:
    store.start_run("app", start("run_a", new=True))
    with pytest.raises(Conflict):
        store.delete("app", "thread_testthread1")
    store.finish_run("app", start("run_a"), [user("q")], "done")
    store.delete("app", "thread_testthread1")
    assert store.meta("app", "thread_testthread1") is None
    assert everything(store) == []
    assert store.run("app", "thread_testthread1", "run_a") is None
    with pytest.raises(NotFound):
        store.delete("app", "thread_testthread1")


def test_a_run_appends_after_the_last_item_without_reading_one(store: ThreadStore) -> None:
    """META keeps the next item's number: finishing a run reads META only (no query of the
    newest message item, up to 16 read units for a 64 KB one)."""
    long = assistant("word " * 40_000)  # four items
    store.start_run("app", start("run_a", new=True))
    assert store.finish_run("app", start("run_a"), [user("q"), long], "done")
    calls: list[str] = []
    store._db.meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.append(model.name)
    )
    store.start_run("app", start("run_b"))
    assert store.finish_run("app", start("run_b"), [user("q2"), assistant("a2")], "done")
    assert "Query" not in calls
    meta = store.meta("app", "thread_testthread1")
    assert meta is not None and meta.next_item == 5  # run_a: 4 items, run_b: 1
    assert everything(store) == [user("q"), long, user("q2"), assistant("a2")]


def test_a_thread_stored_before_meta_kept_the_next_item_still_appends_after_its_last(
    store: ThreadStore,
) -> None:
    store.start_run("app", start("run_a", new=True))
    assert store.finish_run("app", start("run_a"), [user("q"), assistant("a")], "done")
    db = boto3.client("dynamodb", region_name="us-east-1")
    db.update_item(
        TableName=MOTO_TABLE,
        Key={"pk": thread_pk("app", "thread_testthread1"), "sk": {"S": "META"}},
        UpdateExpression="REMOVE nextItem",
    )
    store.start_run("app", start("run_b"))
    assert store.finish_run("app", start("run_b"), [user("q2")], "done")
    assert everything(store) == [user("q"), assistant("a"), user("q2")]
    meta = store.meta("app", "thread_testthread1")
    assert meta is not None and meta.next_item == 2
