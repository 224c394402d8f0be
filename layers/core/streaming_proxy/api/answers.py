"""Reading request bodies and turning ProxyErrors into JSON error answers: the contract's
(Klai routes) and OpenAI's (the /v1 face)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..auth import App, presented_key
from ..errors import (
    BadRequest,
    PayloadTooLarge,
    ProxyError,
    Unauthorized,
    error_object,
    invalid_request,
)
from ..openai_format import error_body, openai_status
from ..service import StreamService
from ..textcheck import parse_json

M = TypeVar("M", bound=BaseModel)

# Where a page sends its subscribe token when the body has no `token`.
TOKEN_HEADER = "x-subscribe-token"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request a page may send too: an app's backend (`channels` None: every
    channel of the app) or a page, limited to the channels its subscribe token grants."""

    app_id: str
    channels: frozenset[str] | None
    # Who, for the first-answer-wins rule: "app key" (an app's backend is one sender), or
    # "token <digest>" (each page by its own token: two tabs are two senders).
    by: str


def service_of(request: Request) -> StreamService:
    service: StreamService = request.app.state.service
    return service


async def read_json(
    request: Request, max_bytes: int, *, empty_is_object: bool = False
) -> dict[str, Any]:
    """The body as a JSON object: 413 over `max_bytes`; 400 when it is not a JSON object,
    nests too deep, or holds a string that is not valid Unicode (textcheck.py)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body over {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"request body over {max_bytes} bytes")
    if empty_is_object and not body.strip():
        return {}  # routes whose body is optional (the key may come in a header)
    data = parse_json(bytes(body))
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def action_name_in(data: dict[str, Any]) -> str | None:
    """The body's `actionName` when it is a string: what an error answer is labelled with,
    read before the body is validated (an invalid body still gets a labelled answer)."""
    name = data.get("actionName")
    return name if isinstance(name, str) else None


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate a body; 400 listing each invalid field (never echoing the values sent)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise invalid_request(e) from e


def authenticate(request: Request, data: dict[str, Any]) -> App:
    """The calling app, from body `apiKey`, `Authorization: Bearer` or `x-api-key`."""
    body_key = data.get("apiKey")
    key = presented_key(
        body_key if isinstance(body_key, str) else None,
        request.headers.get("authorization"),
        request.headers.get("x-api-key"),
    )
    return service_of(request).apps.authenticate(key)


def page_or_app(request: Request, data: dict[str, Any], token: str | None) -> Caller:
    """The caller of a route open to pages: a subscribe token (`token` in the body or the
    `X-Subscribe-Token` header) or else the app key."""
    token = token or request.headers.get(TOKEN_HEADER)
    if token:
        claims = service_of(request).apps.verify_token(token)
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]
        return Caller(claims.app_id, claims.channels, "token " + digest)
    try:
        return Caller(authenticate(request, data).app_id, None, "app key")
    except Unauthorized as e:
        raise Unauthorized(
            "send a subscribe token (token or X-Subscribe-Token) or the app key"
        ) from e


def error_response(error: ProxyError, action_name: str | None = None) -> JSONResponse:
    """The one place a ProxyError becomes the contract's error answer (Klai routes)."""
    body: dict[str, Any] = {"success": False}
    if action_name:
        body["actionName"] = action_name
    body["error"] = error_object(error)
    return JSONResponse(body, status_code=error.status, headers=error.headers() or None)


def openai_error(error: ProxyError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one place a ProxyError becomes an answer on /v1: OpenAI's shape and status."""
    body: dict[str, Any] = error_body(error)
    headers = {**error.headers(), **(headers or {})}
    return JSONResponse(body, status_code=openai_status(error), headers=headers or None)


def path_id(
    request: Request, name: str, pattern: re.Pattern[str], missing: Callable[[str], ProxyError]
) -> str:
    """The id in the path parameter `name`; one not shaped like such an id names nothing,
    so it is `missing` (a 404), as an unknown one is."""
    raw = str(request.path_params[name])
    if pattern.fullmatch(raw) is None:
        raise missing(raw[:80])
    return raw
