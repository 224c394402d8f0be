"""`POST /llm/tool-response`: a frontend tool's answer over HTTPS (Klai's tool-response
service), from a page (subscribe token) or a backend (app key)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, StrictStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import ProxyError, Unauthorized
from ..tools.answers import ToolAnswer
from .answers import authenticate, error_response, parse, read_json, service_of

TOKEN_HEADER = "x-subscribe-token"


class ToolResponseRequest(ToolAnswer):
    """The same answer as the WebSocket `llmToolCallResponse`, plus how the sender proves
    itself: a subscribe token (`token` or the `X-Subscribe-Token` header) or the app key."""

    token: StrictStr | None = None
    api_key: SecretStr | None = Field(default=None, alias="apiKey")

    NOT_ANSWER: ClassVar[frozenset[str]] = frozenset({"answer_id", "token", "api_key"})


async def tool_response(request: Request) -> Response:
    service = service_of(request)
    try:
        data = await read_json(request, service.settings.max_body_bytes)
        body = parse(ToolResponseRequest, data)
        token = body.token or request.headers.get(TOKEN_HEADER)
        if token:
            claims = service.apps.verify_token(token)
            app_id, channels, by = claims.app_id, claims.channels, "token"
        else:
            try:
                app_id, channels, by = authenticate(request, data).app_id, None, "app key"
            except Unauthorized as e:
                raise Unauthorized(
                    "send a subscribe token (token or X-Subscribe-Token) or the app key"
                ) from e
        await service.answer_tool(
            app_id, body.tool_call_id, body.answer(), channels=channels, by=body.sender(by)
        )
    except ProxyError as e:
        return error_response(e)
    return JSONResponse({"success": True, "status": "accepted", "toolCallId": body.tool_call_id})
