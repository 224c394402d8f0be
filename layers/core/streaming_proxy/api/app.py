"""create_app: the stream function's ASGI app, the same under uvicorn and in Lambda."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ExceptionHandler, Receive, Scope, Send

from .. import __version__
from ..config import Settings, get_settings
from ..errors import ProxyError
from ..observability import get_logger
from ..service import StreamService
from . import klai, lambda_events
from .answers import error_response, openai_error
from .pagecors import page_routes
from .sse import SERVER_SEND

Endpoint = Callable[[Request], Awaitable[Response]]


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


# Starlette's own answers (no route, wrong method) in the contract's error shape.
_HTTP_KINDS = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = _HTTP_KINDS.get(exc.status_code, "bad_request" if exc.status_code < 500 else None)
    if _openai_face(request):
        message = f"{exc.detail}: {request.method} {request.url.path}"
        error = ProxyError(message, status=exc.status_code, kind=kind)
        return openai_error(error, dict(exc.headers or {}))
    response = error_response(ProxyError(exc.detail, status=exc.status_code, kind=kind))
    # 405 carries `Allow`, as HTTP requires.
    response.headers.update(exc.headers or {})
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    get_logger().exception("unhandled error", extra={"path": request.url.path})
    if _openai_face(request):
        return openai_error(ProxyError("internal error"))
    return error_response(ProxyError("internal error"))


def _openai_face(request: Request) -> bool:
    """Paths under /v1 answer in OpenAI's error shape, the rest in the contract's."""
    return request.url.path == "/v1" or request.url.path.startswith("/v1/")


ERROR_HANDLERS: dict[Any, ExceptionHandler] = {HTTPException: _http_error, Exception: _unexpected}


def later(module: str, name: str) -> Endpoint:
    """The endpoint `name` of `streaming_proxy.api.<module>`, imported on its first call:
    a route family no LLM Query needs costs its own first request, not every cold start
    (docs/architecture.md decision 40)."""
    loaded: Endpoint | None = None

    async def endpoint(request: Request) -> Response:
        nonlocal loaded
        if loaded is None:
            loaded = cast(
                Endpoint, getattr(importlib.import_module(f"{__package__}.{module}"), name)
            )
        return await loaded(request)

    endpoint.__name__ = endpoint.__qualname__ = name  # the route's name, as before
    return endpoint


def routes() -> list[Route]:
    assistant = "/assistants/{assistant_id}"
    return [
        Route("/health", health, methods=["GET"]),
        Route("/channels/token", later("tokens", "channel_token"), methods=["POST"]),
        Route("/stream/create", klai.chat, methods=["POST"]),
        Route("/stream/create/assistants", klai.assistants, methods=["POST"]),
        Route(
            "/stream/create/assistants/stop",
            later("threads", "assistants_stop"),
            methods=["POST"],
        ),
        Route(
            "/threads/{thread_id}/messages", later("threads", "thread_messages"), methods=["GET"]
        ),
        Route("/threads/{thread_id}", later("threads", "delete_thread"), methods=["DELETE"]),
        Route("/assistants", later("assistants", "create_assistant"), methods=["POST"]),
        Route("/assistants", later("assistants", "list_assistants"), methods=["GET"]),
        Route(assistant, later("assistants", "get_assistant"), methods=["GET"]),
        Route(assistant, later("assistants", "replace_assistant"), methods=["PUT"]),
        Route(assistant, later("assistants", "delete_assistant"), methods=["DELETE"]),
        Route("/llm/query", klai.llm_query, methods=["POST"]),
        # The two routes a page calls from its own origin: CORS (ALLOWED_ORIGINS) on them only.
        *page_routes("/llm/query/stop", klai.llm_query_stop, ERROR_HANDLERS),
        *page_routes("/llm/tool-response", later("tool_response", "tool_response"), ERROR_HANDLERS),
        Route("/message/send", later("messages", "send"), methods=["POST"]),
        Route("/v1/chat/completions", later("openai_compat", "chat_completions"), methods=["POST"]),
        Route("/v1/models", later("openai_compat", "list_models"), methods=["GET"]),
        # The relay function's only route (detached relays): imported with the code.
        Route("/events", lambda_events.pass_through, methods=["POST"]),
    ]


def create_app(
    settings: Settings | None = None,
    service_factory: Callable[[Settings], StreamService] = StreamService,
) -> Starlette:
    """The app; its lifespan creates the StreamService (clients, thread pool) once."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = service_factory(settings or get_settings())
        app.state.service = service
        try:
            yield
        finally:
            await service.aclose()

    app = ProxyApp(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers=ERROR_HANDLERS,
        # Starlette gives an `Exception` handler to its outermost middleware, which answers
        # and then raises on to the server, and uvicorn drops the connection: a keep-alive
        # client's next request failed. Handled here too, the 500 is the request's alone.
        middleware=[Middleware(ExceptionMiddleware, handlers=ERROR_HANDLERS)],
    )
    # A path with a trailing slash is a 404 in the contract's shape, not a bodiless 307
    # whose absolute Location would lose an API Gateway stage's prefix.
    app.router.redirect_slashes = False
    return app


class ProxyApp(Starlette):
    """Starlette, with the server's own `send` kept in the scope (`SERVER_SEND`): a streamed
    answer sends its body there once its start went through Starlette's wrappers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)
