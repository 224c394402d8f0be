"""`POST /llm/tool-response`: a frontend tool's answer over HTTPS (Klai's tool-response
service), from a page (subscribe token) or a backend (app key)."""

from __future__ import annotations

from pydantic import Field, SecretStr, StrictStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import ProxyError
from ..tools.answers import ToolAnswer
from .answers import error_response, page_or_app, parse, read_json, service_of


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
            by=body.sender(caller.by),
        )
    except ProxyError as e:
        return error_response(e)
    return JSONResponse({"success": True, "status": "accepted", "toolCallId": body.tool_call_id})
