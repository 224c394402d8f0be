"""ConnectionsFunction: the WebSocket API's $connect, $disconnect and $default routes."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

from streaming_proxy.coldstart import importing_code

with importing_code():
    # Every `$connect` verifies a subscribe token: PyJWT (which auth.py imports on first use,
    # as most stream requests have none) is imported here with the code, not by the first.
    import jwt  # noqa: F401
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from streaming_proxy.channels.session import ConnectionRoutes
    from streaming_proxy.channels.ws_events import (
        ConnectEvent,
        DisconnectEvent,
        MessageEvent,
        WebSocketEvent,
    )
    from streaming_proxy.config import get_settings
    from streaming_proxy.errors import ProxyError, error_object
    from streaming_proxy.observability import get_logger

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]

logger = get_logger()


@cache
def default_routes() -> ConnectionRoutes:
    return ConnectionRoutes.from_settings(get_settings())


def make_handler(routes: Callable[[], ConnectionRoutes]) -> Handler:
    """The Lambda handler over `routes` (tests pass routes with a recording reply)."""

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        parsed = WebSocketEvent.validate_python(event)
        connection_id = parsed.request_context.connection_id
        logger.append_keys(connection_id=connection_id)
        match parsed:
            case ConnectEvent():
                headers = {name.lower(): value for name, value in parsed.headers.items()}
                token = (parsed.query_string_parameters or {}).get("token")
                try:
                    routes().connect(connection_id, token, headers.get("origin"))
                except ProxyError as e:
                    logger.info("connection refused", extra={"status": e.status, "kind": e.kind})
                    refusal = {"error": error_object(e)}
                    return {"statusCode": e.status, "body": json.dumps(refusal)}
            case DisconnectEvent():
                routes().disconnect(connection_id)
            case MessageEvent():
                routes().message(connection_id, parsed.body)
        return {"statusCode": 200}

    return handler


handler = make_handler(default_routes)
