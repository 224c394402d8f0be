"""Threads over HTTP: a run's stop (Assistants), reading and erasing a thread. Loaded on
the first request to one of these routes (app.py); a run's answers are in runanswers.py."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..contract import RunStopRequest
from ..errors import NotFound, ProxyError, ValidationFailed, field_problems
from ..service import StreamService
from ..streams import TERMINAL
from ..threadpages import MAX_PAGE, read_page
from ..threads import THREAD_ID, RunStatus, thread_not_found
from .answers import authenticate, error_response, parse, path_id, read_json, service_of


async def assistants_stop(request: Request) -> Response:
    """Stop a run: an active one is cancelled through its stream; a finished one answers
    its status (Klai); an unknown run, or another app's, is not_found."""
    service = service_of(request)
    try:
        data = await read_json(request, service.settings.max_body_bytes)
        app = authenticate(request, data)
        body = parse(RunStopRequest, data)
        run = await service.store(service.threads.run, app.app_id, body.thread_id, body.run_id)
        if run is None:
            raise NotFound(f"run {body.run_id} not found on thread {body.thread_id}")
        status: str = run.status
        if run.status == "running":
            status = await _stop_running(service, app.app_id, body, run.stream_id)
    except ProxyError as e:
        return error_response(e)
    ids = {"threadId": body.thread_id, "runId": body.run_id, "streamId": run.stream_id}
    return JSONResponse({"success": True, "status": status, **ids})


async def _stop_running(
    service: StreamService, app_id: str, body: RunStopRequest, stream_id: str
) -> str:
    """Cancel a running run's stream: `cancelling`. A stream over already while its run
    still holds the thread (its relay was lost before recording the run's end) frees the
    thread instead, and the run ends as its stream did (`failed` or `cancelled`); so does
    a stream whose record is gone (its TTL passed: the run was lost long ago), `failed`."""
    stopped = await service.stop(stream_id, app_id)
    status: RunStatus = "failed"
    if stopped.status == "stopped":
        if stopped.stream_status not in TERMINAL:
            return "cancelling"
        if stopped.stream_status == "cancelled":
            status = "cancelled"
    await service.runs.abandon(app_id, body.thread_id, body.run_id, status)
    return status


_THREAD_ID = re.compile(THREAD_ID)


class _Page(BaseModel):
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    cursor: int = Field(default=0, ge=0)


async def thread_messages(request: Request) -> Response:
    """A page of a thread's messages, oldest first; `nextCursor` while more follow."""
    service = service_of(request)
    try:
        app = authenticate(request, {})
        thread_id, query = _thread_id(request), _page(request)
        threads = service.threads
        page = await service.store(
            read_page, threads, app.app_id, thread_id, query.cursor, query.limit
        )
    except ProxyError as e:
        return error_response(e)
    return JSONResponse({"success": True, **page.about(), "messages": page.messages})


async def delete_thread(request: Request) -> Response:
    """Erase a thread (META, messages, runs); 409 while a run holds it (stop it first)."""
    service = service_of(request)
    try:
        app = authenticate(request, {})
        thread_id = _thread_id(request)
        await service.store(service.threads.delete, app.app_id, thread_id)
    except ProxyError as e:
        return error_response(e)
    return JSONResponse({"success": True, "threadId": thread_id, "deleted": True})


def _page(request: Request) -> _Page:
    """The query's `limit` and `cursor` (400 when invalid)."""
    query = request.query_params
    data: dict[str, Any] = {name: query[name] for name in ("limit", "cursor") if name in query}
    try:
        return _Page.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed("invalid query", fields=field_problems(e)) from e


def _thread_id(request: Request) -> str:
    return path_id(request, "thread_id", _THREAD_ID, thread_not_found)
