"""`POST /message/send`: a backend publishes one JSON message to channels (Klai's
messaging send), through the same envelope and fan-out as streams."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..channels.names import ChannelName, check_targets
from ..contract import valid_action_name
from ..errors import ProxyError
from ..messaging import check_size, message_envelope, new_message_id, publish
from .answers import (
    action_name_in,
    authenticate,
    error_response,
    parse,
    read_json,
    service_of,
)


class MessageSendRequest(BaseModel):
    """`{channels, actionName, message}`; `message` is any JSON and required (null too)."""

    # Built on the first send, not at import: no stream needs it (decision 31).
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    channels: list[ChannelName] = Field(min_length=1)
    action_name: Annotated[str, AfterValidator(valid_action_name)] = Field(alias="actionName")
    message: Any = Field()


async def send(request: Request) -> Response:
    service = service_of(request)
    action_name: str | None = None
    try:
        data = await read_json(request, service.settings.max_body_bytes)
        action_name = action_name_in(data)
        app = authenticate(request, data)
        body = parse(MessageSendRequest, data)
        channels = check_targets(body.channels, service.settings.max_channels_per_request)
        envelope = message_envelope(new_message_id(), body.action_name, body.message)
        check_size(envelope, channels)
        publisher = service.publisher(app.app_id, channels, envelope["streamId"])
        delivery = await publish(publisher, envelope)
    except ProxyError as e:
        return error_response(e, action_name)
    return JSONResponse(
        {
            "success": True,
            "actionName": body.action_name,
            "messageId": delivery.message_id,
            "subscribers": delivery.subscribers,
            "delivered": delivery.delivered,
            "failed": delivery.failed,
            "gone": delivery.gone,
        }
    )
