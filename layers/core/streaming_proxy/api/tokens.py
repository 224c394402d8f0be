"""`POST /channels/token`: a backend mints a subscribe token for its browsers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..contract import TokenRequest
from ..errors import ProxyError, ValidationFailed
from .answers import authenticate, error_response, parse, read_json, service_of


async def channel_token(request: Request) -> Response:
    service = service_of(request)
    settings = service.settings
    try:
        data = await read_json(request, settings.max_body_bytes)
        app = authenticate(request, data)
        body = parse(TokenRequest, data)
        ttl = body.ttl or settings.token_default_ttl_seconds
        if ttl > settings.token_max_ttl_seconds:
            raise ValidationFailed(f"ttl may be at most {settings.token_max_ttl_seconds} seconds")
        token, expires_at = service.apps.mint_token(app, body.channels, ttl)
    except ProxyError as e:
        return error_response(e)
    return JSONResponse({"token": token, "expiresAt": expires_at, "channels": body.channels})
