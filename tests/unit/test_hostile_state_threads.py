"""Hostile cases on the thread store (moto's DynamoDB): a run that takes a thread while the
thread is being deleted; runs that publish to more channels than one item could name."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from streaming_proxy.errors import Conflict, DependencyUnavailable, NotFound
from streaming_proxy.tablekeys import thread_pk
from streaming_proxy.threads import RunStart, ThreadStore

from .conftest import MOTO_TABLE

THREAD = "thread_racedthread1"


def start(run: str, *, new: bool = False, channels: tuple[str, ...] = ()) -> RunStart:
    return RunStart(
        thread_id=THREAD, run_id=run, stream_id="st_" + run, new=new,
        lease_until=int(time.time()) + 600, ttl_seconds=3600, channels=channels,
    )  # fmt: skip


class _After:
    """A DynamoDB client that runs `hook` once, right after its first call returns: another
    process acting between two of the store's calls."""

    def __init__(self, client: Any, hook: Callable[[], None]) -> None:
        self._client = client
        self._hook: Callable[[], None] | None = hook

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._client, name)
        if not callable(found) or name == "exceptions":
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            out = found(*args, **kwargs)
            hook, self._hook = self._hook, None
            if hook is not None:
                hook()
            return out

        return call


def test_a_run_taking_the_thread_while_it_is_deleted_loses_nothing(aws_env: None) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    other = ThreadStore(client, MOTO_TABLE)  # another request's store
    other.start_run("app", start("run_a", new=True))
    assert other.finish_run("app", start("run_a"), [{"role": "user", "content": "q"}], "done")
    taken: list[str] = []

    def run_starts() -> None:
        try:
            other.start_run("app", start("run_b"))
            taken.append("run_b")
        except (Conflict, NotFound):
            pass  # refused: the thread is being erased, or is gone

    deleting = ThreadStore(_After(client, run_starts), MOTO_TABLE)  # type: ignore[arg-type]
    try:
        deleting.delete("app", THREAD)
        deleted = True
    except Conflict:
        deleted = False
    if taken:  # the run holds the thread: it was not deleted under it, its answer lands
        assert not deleted
        said = [{"role": "user", "content": "q2"}]
        assert other.finish_run("app", start("run_b"), said, "done")
        run = other.run("app", THREAD, "run_b")
        assert run is not None and run.status == "done"
    else:  # the erase came first: the run was refused, and nothing of the thread is left
        assert deleted and other.meta("app", THREAD) is None
        with pytest.raises(NotFound):
            other.start_run("app", start("run_c"))


def test_a_thread_whose_runs_publish_to_many_long_channels_stays_writable(
    aws_env: None,
) -> None:
    """50 channels of 512 bytes a run (the request maxima): a set of them on META passed
    DynamoDB's 400 KB within 16 runs, and the thread could never be written again."""
    store = ThreadStore(boto3.client("dynamodb", region_name="us-east-1"), MOTO_TABLE)

    def channels(run: int) -> tuple[str, ...]:
        return tuple(f"r{run:02d}c{n:02d}" + "é" * 250 for n in range(50))

    for n in range(24):
        run = start(f"run_{n:08d}", new=n == 0, channels=channels(n))
        store.start_run("app", run)
        assert store.finish_run("app", run, [{"role": "user", "content": f"q{n}"}], "done")
    meta = store.meta("app", THREAD)
    assert meta is not None and meta.message_count == 24
    assert store.published_to("app", meta, {"elsewhere", channels(0)[7]})
    assert store.published_to("app", meta, {channels(23)[49]})
    assert not store.published_to("app", meta, {"elsewhere", "r99c00"})
    store.delete("app", THREAD)  # every channel item goes with the thread
    store.start_run("app", start("run_again", new=True))
    renewed = store.meta("app", THREAD)
    assert renewed is not None and not store.published_to("app", renewed, {channels(0)[7]})


def test_a_thread_whose_delete_was_cut_short_is_gone_until_a_delete_finishes_it(
    aws_env: None,
) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    store = ThreadStore(client, MOTO_TABLE)
    store.start_run("app", start("run_a", new=True, channels=("room",)))
    assert store.finish_run("app", start("run_a"), [{"role": "user", "content": "q"}], "done")

    cut_short = ThreadStore(client, MOTO_TABLE)
    cut_short._db = _Failing(client, "batch_write_item")  # type: ignore[assignment]
    with pytest.raises(DependencyUnavailable):
        cut_short.delete("app", THREAD)
    # Marked for the erase, its items still there: no run, page or stop may use it...
    assert store.meta("app", THREAD) is None
    with pytest.raises(NotFound):
        store.start_run("app", start("run_b"))
    # ... and the delete sent again finishes it.
    store.delete("app", THREAD)
    left = client.query(
        TableName=MOTO_TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": thread_pk("app", THREAD)},
    )["Items"]
    assert left == []
    with pytest.raises(NotFound):
        store.delete("app", THREAD)


class _Failing:
    """A DynamoDB client whose `method` fails (a batch DynamoDB keeps leaving unprocessed)."""

    def __init__(self, client: Any, method: str) -> None:
        self._client = client
        self._method = method

    def __getattr__(self, name: str) -> Any:
        if name == self._method:

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise DependencyUnavailable("DynamoDB left 3 writes unprocessed")

            return fail
        return getattr(self._client, name)
