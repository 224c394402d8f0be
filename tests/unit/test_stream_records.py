"""Stream records: status moves forward only, and the final record is written even when the
table fails for a while (moto DynamoDB)."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from streaming_proxy.blocking import BlockingCalls
from streaming_proxy.recorder import StreamRecorder
from streaming_proxy.streams import StartError, StreamRecord, StreamStore
from tests.unit.conftest import MOTO_TABLE

USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "estimated": False}


@pytest.fixture
def store(aws_env: None) -> StreamStore:
    return StreamStore(boto3.client("dynamodb", region_name="us-east-1"), MOTO_TABLE)


def new(store: StreamStore, stream_id: str = "st_1", *, acked: bool = False) -> None:
    store.create(StreamRecord(stream_id, "app1", "onLlm", ["c"]), acked=acked)


def test_started_never_overwrites_a_final_status(store: StreamStore) -> None:
    new(store)
    store.save_final("st_1", "all", 3, "done", finish_reason="stop", usage=USAGE)
    assert store.mark_started("st_1") is False  # the late background write loses
    record = store.get("st_1", text=True)
    assert record is not None and (record.status, record.text) == ("done", "all")


def test_a_late_progress_snapshot_never_overwrites_the_final_text(store: StreamStore) -> None:
    new(store)
    store.mark_started("st_1")
    store.save_final("st_1", "the whole answer", 9, "done", finish_reason="stop", usage=USAGE)
    assert store.save_progress("st_1", "the whole", 5) is False
    record = store.get("st_1", text=True)
    assert record is not None and (record.text, record.last_seq) == ("the whole answer", 9)


def test_an_early_failure_goes_to_a_waiting_caller_only_while_it_waits(store: StreamStore) -> None:
    failure = StartError(502, "upstream_error", "bad gateway", 500, "openai status 500")
    new(store, "st_wait")
    assert store.mark_start_failed("st_wait", failure) is True  # caller still waiting
    record = store.get("st_wait")
    assert record is not None and record.start_error == failure
    # The waiting caller answers with the provider's own code and the details, as in-process.
    error = failure.as_error()
    assert (error.status, error.kind, error.code, error.details) == (
        502,
        "upstream_error",
        500,
        "openai status 500",
    )
    new(store, "st_gone")
    assert store.mark_acked("st_gone") is True  # the caller was answered "started"
    assert store.mark_start_failed("st_gone", failure) is False  # so publish it instead
    new(store, "st_zero", acked=True)  # ACK_WAIT_SECONDS=0: nobody ever waits
    assert store.mark_start_failed("st_zero", failure) is False
    new(store, "st_late")
    assert store.mark_started("st_late") is True
    assert store.mark_acked("st_late") is False  # already streaming: nothing to mark


class FlakyStore:
    """A StreamStore whose final write fails `failures` times first."""

    def __init__(self, store: StreamStore, failures: int) -> None:
        self._store = store
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def save_final(self, *args: Any, **kwargs: Any) -> bool:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise EndpointConnectionError(endpoint_url="http://dynamodb")
        return self._store.save_final(*args, **kwargs)


async def test_the_final_record_is_retried_until_it_is_written(store: StreamStore) -> None:
    new(store)
    flaky = FlakyStore(store, failures=2)
    recorder = StreamRecorder(flaky, "st_1", BlockingCalls(2, "t"), final_attempts=5)  # type: ignore[arg-type]
    recorder.started()
    await recorder.final("done text", 4, "done", "stop", USAGE)
    assert flaky.calls == 3 and recorder.final_written and not recorder.final_failed
    record = store.get("st_1", text=True)
    assert record is not None and (record.status, record.text) == ("done", "done text")


async def test_a_final_record_that_never_lands_is_reported_not_raised(
    store: StreamStore, caplog: pytest.LogCaptureFixture
) -> None:
    new(store)
    flaky = FlakyStore(store, failures=99)
    recorder = StreamRecorder(flaky, "st_1", BlockingCalls(2, "t"), final_attempts=2)  # type: ignore[arg-type]
    await asyncio.wait_for(recorder.final("x", 1, "failed", "error", USAGE), 10)
    assert flaky.calls == 2 and not recorder.final_written and recorder.final_failed


async def test_many_short_streams_all_end_in_their_final_status(store: StreamStore) -> None:
    """The race the issue saw (21 of 150 short streams stuck `streaming`), forced: the
    background `started` write is made to land after the final write was issued."""
    calls = BlockingCalls(8, "t")
    for i in range(30):
        new(store, f"st_{i}")
    recorders = [StreamRecorder(store, f"st_{i}", calls) for i in range(30)]
    for recorder in recorders:
        recorder.started()
    await asyncio.gather(*(r.final("t", 1, "done", "stop", USAGE) for r in recorders))
    for i in range(30):
        again = store.mark_started(f"st_{i}")  # a straggler write arriving even later
        assert again is False
        record = store.get(f"st_{i}")
        assert record is not None and record.status == "done"
