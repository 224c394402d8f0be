"""Reading request bodies and turning ProxyErrors into the contract's JSON error answers."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..auth import App, presented_key
from ..errors import BadRequest, PayloadTooLarge, ProxyError, ValidationFailed
from ..redact import scrub
from ..service import StreamService
from ..textcheck import parse_json

M = TypeVar("M", bound=BaseModel)


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


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate a body; 422 listing each invalid field (never echoing the values sent)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
            for err in e.errors(include_input=False, include_url=False)
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        raise ValidationFailed(f"invalid request: {summary}", details=problems) from e


def authenticate(request: Request, data: dict[str, Any]) -> App:
    """The calling app, from body `apiKey`, `Authorization: Bearer` or `x-api-key`."""
    body_key = data.get("apiKey")
    key = presented_key(
        body_key if isinstance(body_key, str) else None,
        request.headers.get("authorization"),
        request.headers.get("x-api-key"),
    )
    return service_of(request).apps.authenticate(key)


def error_response(error: ProxyError, action_name: str | None = None) -> JSONResponse:
    """The one place a ProxyError becomes the contract's error answer."""
    body: dict[str, Any] = {"success": False}
    if action_name:
        body["actionName"] = action_name
    body["error"] = {"message": scrub(error.message), "code": error.code}
    if error.details is not None:
        body["error"]["details"] = error.details
    return JSONResponse(body, status_code=error.status)
