"""Named assistants over HTTP (app key): create, list, read, replace, delete; and a run's
payload completed from the assistant it names."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..assistants import apply, assistant_not_found
from ..auth import App
from ..contract import ASSISTANT_ID, AssistantBody, AssistantId, StreamRequest
from ..errors import ProxyError, UnknownProvider, ValidationFailed, field_problems
from ..service import StreamService
from .answers import authenticate, error_response, parse, path_id, read_json, service_of

_ID = re.compile(ASSISTANT_ID)


async def resolved(
    service: StreamService, app_id: str, assistant_id: str, body: StreamRequest
) -> StreamRequest:
    """The request with its payload completed from the app's assistant `assistant_id` (its
    `payload.assistant_id`; 404 when the app has no such assistant, before anything is
    published)."""
    assistant = await service.store(service.assistants.get, app_id, assistant_id)
    payload = apply(body.payload, assistant.fields)
    return body.model_copy(update={"payload": payload})


async def create_assistant(request: Request) -> Response:
    service = service_of(request)
    try:
        fields, app = await _fields(request, service)
        limit = app.config.max_assistants
        if limit is None:
            limit = service.settings.max_assistants_per_app
        assistant = await service.store(service.assistants.create, app.app_id, fields, limit)
    except ProxyError as e:
        return error_response(e)
    return JSONResponse({"success": True, "assistant": assistant.as_json()}, status_code=201)


async def get_assistant(request: Request) -> Response:
    service = service_of(request)
    try:
        app = authenticate(request, {})
        assistant_id = _path_id(request)
        assistant = await service.store(service.assistants.get, app.app_id, assistant_id)
    except ProxyError as e:
        return error_response(e)
    return JSONResponse({"success": True, "assistant": assistant.as_json()})


async def replace_assistant(request: Request) -> Response:
    service = service_of(request)
    try:
        assistant_id = _path_id(request)
        fields, app = await _fields(request, service)
        replace = service.assistants.replace
        assistant = await service.store(replace, app.app_id, assistant_id, fields)
    except ProxyError as e:
        return error_response(e)
    return JSONResponse({"success": True, "assistant": assistant.as_json()})


async def delete_assistant(request: Request) -> Response:
    service = service_of(request)
    try:
        app = authenticate(request, {})
        assistant_id = _path_id(request)
        await service.store(service.assistants.delete, app.app_id, assistant_id)
    except ProxyError as e:
        return error_response(e)
    return JSONResponse({"success": True, "assistantId": assistant_id, "deleted": True})


class _ListQuery(BaseModel):
    limit: int = Field(default=20, ge=1, le=100)
    cursor: AssistantId | None = None


async def list_assistants(request: Request) -> Response:
    """A page of the app's assistants in id order; `nextCursor` while more follow."""
    service = service_of(request)
    try:
        app = authenticate(request, {})
        query = _query(request)
        page = await service.store(service.assistants.page, app.app_id, query.limit, query.cursor)
    except ProxyError as e:
        return error_response(e)
    return JSONResponse(
        {
            "success": True,
            "assistants": [assistant.as_json() for assistant in page.assistants],
            "nextCursor": page.next_cursor,
        }
    )


async def _fields(request: Request, service: StreamService) -> tuple[AssistantBody, App]:
    """The body's assistant fields and the calling app; a provider must exist (400)."""
    data = await read_json(request, service.settings.max_body_bytes)
    app = authenticate(request, data)
    fields = parse(AssistantBody, data)
    known = service.providers.names()
    if fields.provider is not None and fields.provider not in known:
        raise UnknownProvider(
            f"unknown provider '{fields.provider}'",
            fields=[{"field": "provider", "message": "known: " + ", ".join(known)}],
        )
    return fields, app


def _path_id(request: Request) -> str:
    return path_id(request, "assistant_id", _ID, assistant_not_found)


def _query(request: Request) -> _ListQuery:
    query = request.query_params
    data: dict[str, Any] = {k: v for k, v in query.items() if k in ("limit", "cursor")}
    try:
        return _ListQuery.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed("invalid query", fields=field_problems(e)) from e
