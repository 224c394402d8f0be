"""A run's answers on the Klai routes (klai.py): its ids, Assistants' acceptance and
`stream:false` answer, and the thread released when the request fails. Kept apart from
threads.py, so an LLM Query on no thread imports none of the thread routes (app.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..errors import ProxyError
from ..jobs import StreamJob
from ..observability import get_logger
from ..outcome import StreamOutcome
from ..service import StreamService


@asynccontextmanager
async def held(service: StreamService, job: StreamJob) -> AsyncIterator[None]:
    """Release the job's thread when the request fails before its relay could (a refusal
    after the run took the thread, or a fault of ours): never left held until its lease
    ends. A relay that ran has released it already, and a release then writes nothing (the
    run no longer holds the thread)."""
    try:
        yield
    except Exception:
        if job.thread is not None:
            try:
                await service.runs.release(job.app_id, job.thread)
            except ProxyError:
                get_logger().warning("thread not released", extra={"stream_id": job.stream_id})
        raise


def run_ids(job: StreamJob) -> dict[str, Any]:
    """`threadId` and `runId` for an answer about a run (nothing without a thread)."""
    if job.thread is None:
        return {}
    return {"threadId": job.thread.thread_id, "runId": job.thread.run_id}


def run_created(job: StreamJob, status: str) -> dict[str, Any]:
    """Klai's Assistants acceptance, plus the stream's id and how it stands."""
    return {
        "success": True,
        **run_ids(job),
        "status": "created",
        "streamId": job.stream_id,
        "streamStatus": status,
    }


def run_done(job: StreamJob, outcome: StreamOutcome) -> dict[str, Any]:
    """Klai's Assistants `stream:false` answer."""
    return {
        "success": True,
        "data": [{"type": "text", "text": {"value": outcome.text}}],
        **run_ids(job),
        "status": "done",
        "streamId": job.stream_id,
        "finishReason": outcome.finish_reason,
        "usage": outcome.usage,
    }
