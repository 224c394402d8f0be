"""CORS for the routes a page calls from its own origin (`POST /llm/tool-response`,
`POST /llm/query/stop`): Starlette's CORSMiddleware on just those routes, its origins from
ALLOWED_ORIGINS. Routes an app key authenticates get none: that key never belongs in a page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, ExceptionHandler, Receive, Scope, Send

from ..errors import Forbidden
from .answers import error_response

__all__ = ["PageCORS", "page_routes"]

PAGE_METHODS = ("POST",)
# What docs/web-client.md's pages send; a preflight asking for any other header is refused.
PAGE_HEADERS = ("Content-Type", "X-Subscribe-Token")
MAX_AGE_SECONDS = 600


class PageCORS(CORSMiddleware):
    """Starlette's CORSMiddleware with the contract's preflight answers: 204 when allowed, a
    403 `forbidden` in the Klai shape without any `Access-Control-Allow-*` header when not."""

    def __init__(self, app: ASGIApp, allow_origins: list[str]) -> None:
        super().__init__(
            app,
            allow_origins=allow_origins,
            allow_methods=PAGE_METHODS,
            allow_headers=PAGE_HEADERS,
            max_age=MAX_AGE_SECONDS,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        checked = super().preflight_response(request_headers)  # 200 "OK" or 400 plain text
        if checked.status_code == 200:
            headers = {
                k: v for k, v in checked.headers.items() if k.startswith(("access-", "vary"))
            }
            return Response(status_code=204, headers=headers)
        if self.is_allowed_origin(request_headers["origin"]):
            refusal = Forbidden(
                "CORS preflight refused: only POST with the headers "
                f"{', '.join(PAGE_HEADERS)} (and the CORS-safelisted ones) is allowed"
            )
        else:
            refusal = Forbidden("CORS preflight refused: origin not in ALLOWED_ORIGINS")
        refused = error_response(refusal)
        refused.headers["Vary"] = checked.headers["vary"]
        return refused


def _page_cors(app: ASGIApp) -> ASGIApp:
    """PageCORS around `app`, made at the first request from the settings the app's lifespan
    read (the routes exist before them)."""
    cors: PageCORS | None = None

    async def apply(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal cors
        if cors is None:
            origins = scope["app"].state.service.settings.allowed_origins
            cors = PageCORS(app, allow_origins=list(origins))
        await cors(scope, receive, send)

    return apply


async def _not_a_preflight(request: Request) -> Response:
    """An OPTIONS that is no CORS preflight (no `Origin` or `Access-Control-Request-Method`):
    the route serves POST only, as before it took preflights."""
    raise HTTPException(405, headers={"Allow": ", ".join(PAGE_METHODS)})


def page_routes(
    path: str,
    endpoint: Callable[[Request], Awaitable[Response]],
    error_handlers: Mapping[Any, ExceptionHandler],
) -> tuple[Route, Route]:
    """`POST path` and its preflight (`OPTIONS path`), both inside PageCORS, with the app's
    `error_handlers` inside it too, so every answer, a 500 included, reaches the page."""
    middleware = [
        Middleware(_page_cors),
        Middleware(ExceptionMiddleware, handlers=dict(error_handlers)),
    ]
    return (
        Route(path, endpoint, methods=["POST"], middleware=middleware),
        Route(path, _not_a_preflight, methods=["OPTIONS"], middleware=middleware),
    )
