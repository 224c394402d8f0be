"""A run's thread is released when its request fails before the relay could release it,
whatever the failure (runanswers.held), on moto's DynamoDB."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from streaming_proxy.api.runanswers import held
from streaming_proxy.config import Settings
from streaming_proxy.contract import Payload
from streaming_proxy.errors import ValidationFailed
from streaming_proxy.jobs import StreamJob
from streaming_proxy.runs import ThreadRuns
from streaming_proxy.threads import ThreadStore

from .conftest import MOTO_TABLE


async def inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


@pytest.fixture
def runs(aws_env: None) -> ThreadRuns:
    store = ThreadStore(boto3.client("dynamodb", region_name="us-east-1"), MOTO_TABLE)
    return ThreadRuns(store, inline, Settings())


async def begun_job(runs: ThreadRuns, thread_id: str | None = None) -> StreamJob:
    payload = Payload.model_validate(
        {"provider": "mock", "messages": [{"role": "user", "content": "hi"}]}
    )
    if thread_id is not None:
        payload = payload.model_copy(update={"thread_id": thread_id})
    begun = await runs.begin("app", payload, "st_test")
    return StreamJob(
        stream_id="st_test",
        app_id="app",
        kind="assistants",
        action_name="onRun",
        payload=begun.payload,
        flush_interval_ms=0,
        thread=begun.thread,
    )


@pytest.mark.parametrize("failure", [ValidationFailed("refused"), RuntimeError("a fault")])
async def test_a_request_failing_after_its_run_took_the_thread_frees_it(
    runs: ThreadRuns, failure: Exception
) -> None:
    job = await begun_job(runs)
    assert job.thread is not None
    service = SimpleNamespace(runs=runs)
    with pytest.raises(type(failure)):
        async with held(service, job):  # type: ignore[arg-type]
            raise failure
    meta = runs.threads.meta("app", job.thread.thread_id)
    assert meta is not None and meta.active_run is None
    after = await begun_job(runs, job.thread.thread_id)  # the next run takes it at once
    assert after.thread is not None and after.thread.run_id != job.thread.run_id


async def test_a_failure_after_the_next_run_took_the_thread_leaves_that_run_alone(
    runs: ThreadRuns,
) -> None:
    job = await begun_job(runs)
    assert job.thread is not None
    await runs.release("app", job.thread)  # the relay ran and let go
    following = await begun_job(runs, job.thread.thread_id)
    with pytest.raises(RuntimeError):
        async with held(SimpleNamespace(runs=runs), job):  # type: ignore[arg-type]
            raise RuntimeError("late")
    meta = runs.threads.meta("app", job.thread.thread_id)
    assert following.thread is not None
    assert meta is not None and meta.active_run == following.thread.run_id
