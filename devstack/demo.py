"""The demo page and its demo-only backend routes, served by the local stack (never deployed).

The demo backend calls the proxy's public HTTP API with the dev app key, exactly as a
real backend (a FileMaker script, say) would; the browser never sees the app key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from streaming_proxy.config import Settings, get_settings

from .settings import DevSettings

WEB = Path(__file__).resolve().parent.parent / "web"
DEMO_ACTION = "demoChat"
DEMO_CHANNEL = "demo"
# Stream options a demo request may set (see StreamOptions in the proxy's contract).
STREAM_OPTIONS = ("flushIntervalMs", "toolTimeoutSeconds")


def usable_providers(settings: Settings) -> list[str]:
    """The mock, plus every provider the server holds credentials for."""
    keys = {
        "openai": bool(settings.openai_api_key),
        "anthropic": bool(settings.anthropic_api_key),
        "gemini": bool(settings.gemini_api_key),
        "azure": bool(settings.azure_openai_api_key and settings.azure_openai_endpoint),
        "bedrock": bool(settings.bedrock_region),
    }
    return ["mock", *(name for name, configured in keys.items() if configured)]


class DemoFront:
    """The demo page's paths go to the demo's own small app; every other request (and the
    lifespan) goes to the product app itself, with no middleware or routing of the demo's
    in between: the product's requests run as in the stream function, which serves it
    alone."""

    def __init__(self, demo: ASGIApp, product: ASGIApp) -> None:
        self.demo = demo
        self.product = product

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and _is_demo_path(scope["path"]):
            await self.demo(scope, receive, send)
        else:
            await self.product(scope, receive, send)


def _is_demo_path(path: str) -> bool:
    return path == "/" or path.startswith(("/demo/", "/web/")) or path == "/web"


def demo_app(product: Starlette, dev: DevSettings) -> DemoFront:
    """The product app with the demo page and `/demo/*` routes in front of it."""
    base = f"http://{dev.host}:{dev.http_port}"
    headers = {"x-api-key": dev.api_key}

    async def forward(
        path: str, body: dict[str, Any], accept: str = "application/json"
    ) -> Response:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            r = await client.post(path, json=body, headers={**headers, "accept": accept})
        return Response(r.content, status_code=r.status_code, media_type="application/json")

    async def index(request: Request) -> Response:
        return FileResponse(WEB / "index.html")

    async def config(request: Request) -> Response:
        # The host the browser used (localhost or 127.0.0.1), so the socket goes to the same one.
        host = request.url.hostname or dev.host
        return JSONResponse(
            {
                "wsUrl": f"ws://{host}:{dev.ws_port}",
                "channel": DEMO_CHANNEL,
                "actionName": DEMO_ACTION,
                "providers": usable_providers(get_settings()),
            }
        )

    async def token(request: Request) -> Response:
        body = await _json(request)
        channels = body.get("channels") or [body.get("channel") or DEMO_CHANNEL]
        return await forward("/channels/token", {"channels": channels, "ttl": 3600})

    async def start(request: Request) -> Response:
        body = await _json(request)
        prompt = str(body.get("prompt") or "Hello from the demo page")
        payload: dict[str, Any] = {
            "provider": body.get("provider") or "mock",
            "messages": [{"role": "user", "content": prompt}],
            "providerArgs": body.get("providerArgs") or {},
        }
        if body.get("model"):
            payload["model"] = body["model"]
        # The tools the page offers the model (its `ui_` ones it answers itself); a mock
        # script that calls them comes in providerArgs. The proxy validates both.
        if "tools" in body:
            payload["tools"] = body["tools"]
        request_body = {
            "channels": [body.get("channel") or DEMO_CHANNEL],
            "actionName": body.get("actionName") or DEMO_ACTION,
            "payload": payload,
        }
        options = {key: body[key] for key in STREAM_OPTIONS if key in body}
        if options:
            request_body["options"] = options
        if not body.get("conversation"):
            return await forward("/llm/query", request_body)
        # Conversation mode: a run on the page's thread (a new one without threadId).
        if body.get("threadId"):
            payload["thread_id"] = body["threadId"]
        return await forward("/stream/create/assistants", request_body)

    async def stop(request: Request) -> Response:
        body = await _json(request)
        return await forward("/llm/query/stop", {"streamId": body.get("streamId", "")})

    demo = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/demo/config", config, methods=["GET"]),
            Route("/demo/token", token, methods=["POST"]),
            Route("/demo/start", start, methods=["POST"]),
            Route("/demo/stop", stop, methods=["POST"]),
            Mount("/web", StaticFiles(directory=WEB), name="web"),
        ]
    )
    return DemoFront(demo, product)


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
