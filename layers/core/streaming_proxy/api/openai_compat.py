"""`POST /v1/chat/completions`: the OpenAI-compatible face (Kong "llm/v1/chat" style)."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..config import AppConfig
from ..errors import ProxyError, ValidationFailed
from ..events import ProviderEvent
from ..gate import CallerGate
from ..jobs import StreamJob
from ..openai_format import (
    ChatCompletionRequest,
    ChunkBuilder,
    completion,
    error_body,
    payload_of,
    split_model,
    sse_frame,
)
from ..outcome import StreamOutcome
from ..policy import permits
from ..service import StreamService
from ..streams import new_stream_id
from .answers import authenticate, openai_error, parse, read_json, service_of
from .sse import FrameQueue, sse_answer


class ChunkStream(FrameQueue):
    """A relay observer writing `chat.completion.chunk` frames, then usage and `[DONE]`."""

    def __init__(self, builder: ChunkBuilder, include_usage: bool) -> None:
        super().__init__()
        self._builder = builder
        self._include_usage = include_usage

    async def on_event(self, event: ProviderEvent) -> None:
        frame = self._builder.frame_for(event)
        if frame is not None:
            self.put(frame)

    async def on_finish(self, outcome: StreamOutcome) -> None:
        if outcome.error is not None:
            # The SDK raises an APIError when a data frame carries "error".
            self.put(sse_frame(error_body(outcome.error)))
        else:
            self.put(sse_frame(self._builder.finish(outcome)))
            if self._include_usage:
                self.put(sse_frame(self._builder.usage(outcome)))
            self.put(sse_frame("[DONE]"))


async def chat_completions(request: Request) -> Response:
    service = service_of(request)
    try:
        data = await read_json(request, service.settings.max_body_bytes)
        app = authenticate(request, data)
        body = parse(ChatCompletionRequest, data)
        job = _job(service, request, body, app.app_id)
        service.check(job)
        await service.admit(job)
        # Streams with channels are recorded (stop, resume): the write runs beside the
        # provider request and the relay releases nothing before it landed.
        registration = service.registration(job) if job.channels else None
        completion_id = "chatcmpl-" + job.stream_id.removeprefix("st_")
        if body.stream:
            return await _stream(service, job, body, completion_id, registration)
        outcome = await service.run(service.relay(job, registration=registration))
        if outcome.error is not None:
            raise outcome.error
    except ProxyError as e:
        return openai_error(e)
    return JSONResponse(
        completion(completion_id, body.model, outcome), headers={"X-Stream-Id": job.stream_id}
    )


# A header value: printable ASCII without spaces, as docs/openapi.yaml states.
_HEADER_ACTION_NAME = re.compile(r"[\x21-\x7e]{1,200}")


def _job(
    service: StreamService, request: Request, body: ChatCompletionRequest, app_id: str
) -> StreamJob:
    header_channels = request.headers.get("x-channels", "")
    channels = body.channels or [c.strip() for c in header_channels.split(",") if c.strip()]
    header_action = request.headers.get("x-action-name")
    if header_action is not None and not _HEADER_ACTION_NAME.fullmatch(header_action):
        # Checked even when the body names the action: a bad header is a caller's bug.
        raise ValidationFailed("X-Action-Name must be 1-200 visible ASCII characters")
    action_name = body.action_name or header_action
    if channels and not action_name:
        raise ValidationFailed("actionName (or the X-Action-Name header) is required with channels")
    provider, model = split_model(
        body.model, service.providers.names(), service.settings.default_provider
    )
    return StreamJob(
        stream_id=new_stream_id(),
        app_id=app_id,
        kind="openai",
        action_name=action_name or "",
        channels=channels,
        payload=payload_of(body, provider, model, service.providers.speaks_openai(provider)),
        flush_interval_ms=service.settings.flush_interval_ms,
    )


async def _stream(
    service: StreamService,
    job: StreamJob,
    body: ChatCompletionRequest,
    completion_id: str,
    registration: Awaitable[None] | None,
) -> Response:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunks = ChunkStream(ChunkBuilder(completion_id, body.model), include_usage)
    gate = CallerGate()
    relay = service.relay(job, observers=[chunks], gate=gate, registration=registration)
    return await sse_answer(service, relay, gate, chunks, openai_error)


async def list_models(request: Request) -> Response:
    """`GET /v1/models`: the models MODELS lists for the providers this deployment serves,
    those the calling app's `models` entry allows."""
    try:
        app = authenticate(request, {})
    except ProxyError as e:
        return openai_error(e)
    return JSONResponse({"object": "list", "data": _models(service_of(request), app.config)})


def _models(service: StreamService, app: AppConfig) -> list[dict[str, Any]]:
    # Ids are provider/model, as /v1/chat/completions takes them; `created` is unknown.
    models = service.settings.models
    return [
        {"id": f"{provider}/{model}", "object": "model", "created": 0, "owned_by": provider}
        for provider in service.providers.configured()
        for model in models.get(provider, [])
        if permits(app, provider, model)
    ]
