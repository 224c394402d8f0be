"""The Klai endpoints: Chat (`/stream/create`), LLM Query (`/llm/query`) and stop."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..channels.names import check_targets
from ..contract import Message, StopRequest, StreamRequest
from ..errors import ProxyError, ValidationFailed
from ..gate import CallerGate
from ..jobs import StreamJob, StreamKind
from ..openai_format import completion
from ..providers.raw import recording
from ..service import StreamService
from ..streams import StreamStatus, new_stream_id
from .answers import (
    action_name_in,
    authenticate,
    error_response,
    page_or_app,
    parse,
    read_json,
    service_of,
)
from .runanswers import held, run_created, run_done, run_ids
from .sse import KlaiSseSink, sse_answer

SETUP_COMPLETE = "Streaming setup complete"


async def chat(request: Request) -> Response:
    return await _stream_endpoint(request, "chat")


async def llm_query(request: Request) -> Response:
    return await _stream_endpoint(request, "llm")


async def llm_query_stop(request: Request) -> Response:
    service = service_of(request)
    try:
        data = await read_json(request, service.settings.max_body_bytes)
        body = parse(StopRequest, data)
        caller = page_or_app(request, data, body.token)
        result = await service.stop(body.stream_id, caller.app_id, caller.channels)
    except ProxyError as e:
        return error_response(e)
    # Klai answers 200 either way; a stream of another app or channel is simply not found.
    answer: dict[str, Any] = {
        "success": True,
        "status": result.status,
        "streamId": result.stream_id,
    }
    if result.stream_status is not None:
        answer["streamStatus"] = result.stream_status
    return JSONResponse(answer)


async def assistants(request: Request) -> Response:
    """Klai's Assistants: a run on a thread (a new one without `payload.thread_id`)."""
    return await _stream_endpoint(request, "assistants")


async def _stream_endpoint(request: Request, kind: StreamKind) -> Response:
    service = service_of(request)
    action_name: str | None = None
    try:
        data = await read_json(request, service.settings.max_body_bytes)
        action_name = action_name_in(data)
        app = authenticate(request, data)
        body = await _with_memory(service, app.app_id, kind, parse(StreamRequest, data))
        job = _job(service, body, app.app_id, kind)
        service.check(job)
        await service.admit(job)
        if kind == "assistants" or body.payload.thread_id is not None:
            # A self-invoked relay reads the history itself: its event stays small.
            relay_reads = service.settings.detach_mode == "lambda" and _acked(request, body)
            job = await _on_thread(service, body, job, read_history=not relay_reads)
        async with held(service, job):
            if job.thread is not None:
                service.check(job)  # the history too must suit the provider
            return await _answer(request, service, body, job)
    except ProxyError as e:
        return error_response(e, action_name)


async def _with_memory(
    service: StreamService, app_id: str, kind: StreamKind, body: StreamRequest
) -> StreamRequest:
    """The payload completed from its assistant (404 for an unknown one). Threads and
    assistants are for LLM Query and Assistants: Chat refuses them (400)."""
    if kind == "chat":
        for field in ("thread_id", "assistant_id"):
            if getattr(body.payload, field) is not None:
                raise ValidationFailed(
                    f"payload.{field}: threads and assistants are for /llm/query and "
                    "/stream/create/assistants",
                    fields=[{"field": f"payload.{field}", "message": "not accepted on Chat"}],
                )
        return body
    assistant_id = body.payload.assistant_id
    if assistant_id is not None:
        # The assistants' routes load on their first use (app.py), and so on a run's.
        from .assistants import resolved

        body = await resolved(service, app_id, assistant_id, body)
    return _instructed(body) if kind == "llm" else body


def _instructed(body: StreamRequest) -> StreamRequest:
    """An LLM Query on no thread: its instructions (its own or its assistant's) go first,
    as a system message (a run on a thread sends them before the history: runs.py)."""
    payload = body.payload
    if payload.thread_id is not None or not payload.instructions:
        return body
    system = Message(role="system", content=payload.instructions)
    update = {"messages": [system, *payload.messages], "instructions": None}
    return body.model_copy(update={"payload": payload.model_copy(update=update)})


async def _on_thread(
    service: StreamService, body: StreamRequest, job: StreamJob, *, read_history: bool
) -> StreamJob:
    """The job as a run on its thread: instructions, history and the new messages (only
    the new ones without `read_history`: the relay reads the rest, runs.py)."""
    begun = await service.runs.begin(
        job.app_id, body.payload, job.stream_id, job.channels, read_history=read_history
    )
    body = body.model_copy(update={"payload": begun.payload})
    return _job(service, body, job.app_id, job.kind, job.stream_id).model_copy(
        update={"thread": begun.thread}
    )


async def _answer(
    request: Request, service: StreamService, body: StreamRequest, job: StreamJob
) -> Response:
    if not body.payload.stream:
        return await _complete(service, job, raw=body.options.raw_response)
    if not _acked(request, body):
        return await _sse(service, job)
    detached = await service.detach(job)  # writes the stream's record first
    if detached.error is not None:
        raise detached.error.as_error()
    if job.kind == "assistants":
        return JSONResponse(run_created(job, detached.status))
    return JSONResponse(_ack(job, detached.status))


def _acked(request: Request, body: StreamRequest) -> bool:
    """Whether the request is answered with an ack, its relay detached from it (else the
    answer is the stream itself, as SSE, or the whole result with `stream:false`)."""
    return body.payload.stream and "text/event-stream" not in request.headers.get("accept", "")


def _job(
    service: StreamService,
    body: StreamRequest,
    app_id: str,
    kind: StreamKind,
    stream_id: str | None = None,
) -> StreamJob:
    settings, options = service.settings, body.options
    # The request's own list, whatever it is used for (stream:false publishes nothing).
    check_targets(body.channels, settings.max_channels_per_request)
    rounds = (
        settings.max_tool_rounds if options.max_tool_rounds is None else options.max_tool_rounds
    )
    if rounds > settings.max_tool_rounds:
        raise ValidationFailed(
            f"options.maxToolRounds may be at most {settings.max_tool_rounds} on this deployment",
            fields=[{"field": "options.maxToolRounds", "message": "over the maximum"}],
        )
    timeout = options.tool_timeout_seconds or settings.tool_timeout_seconds
    return StreamJob(
        stream_id=stream_id or new_stream_id(),
        app_id=app_id,
        kind=kind,
        action_name=body.action_name or "",
        # stream:false answers the caller only; nothing is published.
        channels=body.channels if body.payload.stream else [],
        payload=body.payload,
        flush_interval_ms=settings.flush_interval_ms
        if options.flush_interval_ms is None
        else options.flush_interval_ms,
        max_tool_rounds=rounds,
        tool_timeout_seconds=timeout,
    )


async def _sse(service: StreamService, job: StreamJob) -> Response:
    sink = KlaiSseSink()
    gate = CallerGate()
    # The record's write runs beside the provider request; the relay awaits it before the
    # first byte, so DynamoDB down is still the 503 answer (and nothing is published).
    relay = service.relay(job, [sink], gate=gate, registration=service.registration(job))
    return await sse_answer(
        service, relay, gate, sink, lambda e: error_response(e, job.action_name)
    )


async def _complete(service: StreamService, job: StreamJob, *, raw: bool) -> Response:
    """The whole result (`stream:false`): an OpenAI `chat.completion` whatever the provider,
    in the Klai success envelope; `raw`: plus the provider's own frames."""
    with recording(job.provider, job.payload.api_key) as frames:
        outcome = await service.run(service.relay(job))
    if outcome.error is not None:
        return error_response(outcome.error, job.action_name)
    if job.kind == "assistants":
        return JSONResponse(run_done(job, outcome))
    model = job.payload.model or job.provider
    data = completion("chatcmpl-" + job.stream_id.removeprefix("st_"), model, outcome)
    if raw:
        data["raw_response"] = frames.as_json()
    answer = {"success": True, "actionName": job.action_name, "streamId": job.stream_id}
    return JSONResponse({**answer, **run_ids(job), "data": data})


def _ack(job: StreamJob, status: StreamStatus) -> dict[str, Any]:
    """Klai's acceptance answer, saying how the stream stands: `complete` only once the
    provider's first byte came (or the stream is over), `pending` when it had not yet.
    An LLM Query on a thread also says its `threadId` and `runId`."""
    message = SETUP_COMPLETE if status in ("streaming", "done") else f"Streaming setup {status}"
    ids = {"streamId": job.stream_id, "streamStatus": status, **run_ids(job)}
    if job.kind == "llm":
        return {"success": True, "data": {"message": message, **ids}, **ids}
    return {"success": True, "message": message, **ids}
