"""Reading request bodies and turning ProxyErrors into the contract's JSON error answers."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..auth import App, presented_key
from ..errors import BadRequest, PayloadTooLarge, ProxyError, ValidationFailed
from ..redact import scrub
from ..service import StreamService

M = TypeVar("M", bound=BaseModel)


def service_of(request: Request) -> StreamService:
    service: StreamService = request.app.state.service
    return service


# Deeper bodies are refused before anything walks them recursively (pydantic, json.dumps).
MAX_JSON_DEPTH = 64


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object: 413 over `max_bytes`; 400 when it is not a JSON object,
    nests deeper than MAX_JSON_DEPTH, or holds a string that is not valid Unicode."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body over {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"request body over {max_bytes} bytes")
    try:
        data = json.loads(body)
    except RecursionError as e:
        raise BadRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels") from e
    except ValueError as e:
        raise BadRequest("request body is not valid JSON") from e
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    check_json(data)
    return data


def check_json(data: Any) -> None:
    """BadRequest for nesting over MAX_JSON_DEPTH or a lone surrogate (`"\\ud800"`) in any
    string or key: such text cannot be encoded as UTF-8 anywhere downstream."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, f"{path}.{key}" if path else "(a key)")
                stack.append((item, depth + 1, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{path}.{i}") for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, path or "(body)")


def _check_text(text: str, path: str) -> None:
    if _SURROGATE.search(text):
        where = _safe_path(path)
        raise BadRequest(
            f"{where}: text is not valid Unicode (a lone surrogate such as \\ud800)",
            details=[{"field": where, "message": "lone surrogate"}],
        )


def _safe_path(path: str) -> str:
    # The path is built from the body's keys, which may hold the surrogate themselves.
    return _SURROGATE.sub("\ufffd", path)[:200]


_SURROGATE = re.compile("[\ud800-\udfff]")


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
