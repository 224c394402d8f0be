"""`POST /llm/tool-response`: a frontend tool's answer over HTTPS (Klai's tool-response
service), from a page (subscribe token) or a backend (app key)."""

from __future__ import annotations

import hashlib

from pydantic import Field, SecretStr, StrictStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import ProxyError
from ..tools.answers import ToolAnswer
from .answers import (
    TOKEN_HEADER,
    Caller,
    error_response,
    page_or_app,
    parse,
    read_json,
    service_of,
)


class ToolResponseRequest(ToolAnswer):
    """The same answer as the WebSocket `llmToolCallResponse`, plus how the sender proves
    itself: a subscribe token (`token` or the `X-Subscribe-Token` header) or the app key."""

    token: StrictStr | None = None
    api_key: SecretStr | None = Field(default=None, alias="apiKey")


async def tool_response(request: Request) -> Response:
    service = service_of(request)
    try:
        data = await read_json(request, service.settings.max_body_bytes)
        body = parse(ToolResponseRequest, data)
        caller = page_or_app(request, data, body.token)
        await service.answer_tool(
            caller.app_id,
            body.tool_call_id,
            body.answer(),
            channels=caller.channels,
            by=body.sender(_sender(request, body, caller)),
        )
    except ProxyError as e:
        return error_response(e)
    return JSONResponse({"success": True, "status": "accepted", "toolCallId": body.tool_call_id})


def _sender(request: Request, body: ToolResponseRequest, caller: Caller) -> str:
    """Who answers, when the answer has no `answerId`: a page by its token (two tabs hold
    two; "token" alone made every page the sender of the taken answer, so a second tab
    answering alike was told its answer was taken), the backend as the one app key."""
    token = body.token or request.headers.get(TOKEN_HEADER)
    if caller.by != "token" or not token:
        return caller.by
    return "token " + hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]
