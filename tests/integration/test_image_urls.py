"""http(s) image URLs through the real stack: fetched from a loopback image server (allowed
only by ALLOW_PRIVATE_IMAGE_URLS, on for a stack of this module) and inlined as base64 in the
native field of the providers that take bytes; refused with a 400 naming the part, before any
provider is called, when the guard or the limits say no (and always on the session stack,
where the setting is off, as in a deployment)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from devstack.process import start_stack
from tests.conftest import Stack, stack_env
from tests.fake_llm import FakeLlm
from tests.fake_webhook import FakeWebhook
from tests.integration.test_bad_input import assert_klai_error
from tests.loopback import LoopbackServer

CAT = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
CAT_B64 = base64.b64encode(CAT).decode("ascii")
MAX_BYTES = 4096
PATHS = {
    "anthropic": "/v1/messages",
    "gemini": ":streamGenerateContent",
    "bedrock": "/converse-stream",
    "openai": "/v1/chat/completions",
}


def image_app() -> Starlette:
    async def cat(request: Request) -> Response:
        return Response(CAT, media_type="image/png")

    async def page(request: Request) -> Response:
        return Response("<html>not an image</html>", media_type="text/html")

    async def big(request: Request) -> Response:
        return Response(b"\x00" * (MAX_BYTES * 2), media_type="image/png")

    async def to_metadata(request: Request) -> Response:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)

    async def to_cat(request: Request) -> Response:
        return RedirectResponse("/cat.png", status_code=301)

    return Starlette(
        routes=[
            Route("/cat.png", cat),
            Route("/page", page),
            Route("/big.png", big),
            Route("/to-metadata", to_metadata),
            Route("/to-cat", to_cat),
        ]
    )


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    server = LoopbackServer()
    server.start(image_app())
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def image_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLlm, webhook: FakeWebhook
) -> Iterator[Stack]:
    """The stack with loopback image URLs allowed (a local-test setting only)."""
    env = {
        **stack_env(fake_llm, webhook),
        "ALLOW_PRIVATE_IMAGE_URLS": "true",
        "IMAGE_MAX_BYTES": str(MAX_BYTES),
    }
    running = start_stack(tmp_path_factory.mktemp("image-stack"), env)
    try:
        yield running
    finally:
        running.stop()


def query(stack: Stack, provider: str, url: str, *, stream: bool = False) -> httpx.Response:
    payload: dict[str, Any] = {
        "provider": provider,
        "model": "fake-text",
        "stream": stream,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }
    if provider == "gemini":
        payload["apiKey"] = "fake-gemini-request-key"
    body: dict[str, Any] = {"payload": payload}
    if stream:
        body.update(channels=["images"], actionName="onLlm")
    return httpx.post(
        f"{stack.http}/llm/query", json=body, headers={"x-api-key": stack.api_key}, timeout=30
    )


# The fetched bytes in each provider's native image field.
NATIVE = {
    "anthropic": lambda body: body["messages"][0]["content"][1],
    "gemini": lambda body: body["contents"][0]["parts"][1],
    "bedrock": lambda body: body["messages"][0]["content"][1],
}
EXPECTED = {
    "anthropic": {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": CAT_B64},
    },
    "gemini": {"inlineData": {"mimeType": "image/png", "data": CAT_B64}},
    "bedrock": {"image": {"format": "png", "source": {"bytes": CAT_B64}}},
}


@pytest.mark.parametrize("provider", sorted(NATIVE))
@pytest.mark.parametrize("path", ["/cat.png", "/to-cat"])
def test_image_urls_arrive_as_base64_in_the_providers_native_field(
    image_stack: Stack, fake_llm: FakeLlm, images: str, provider: str, path: str
) -> None:
    r = query(image_stack, provider, images + path)
    assert r.status_code == 200, r.text
    assert NATIVE[provider](fake_llm.last(PATHS[provider]).body) == EXPECTED[provider]


def test_openai_receives_the_url_as_sent(
    image_stack: Stack, fake_llm: FakeLlm, images: str
) -> None:
    r = query(image_stack, "openai", images + "/cat.png")
    assert r.status_code == 200, r.text
    part = fake_llm.last(PATHS["openai"]).body["messages"][0]["content"][1]
    assert part == {"type": "image_url", "image_url": {"url": images + "/cat.png"}}


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/to-metadata", "resolves to a cloud metadata address"),
        ("/page", "not a png, jpeg, gif or webp image (text/html)"),
        ("/big.png", f"larger than {MAX_BYTES} bytes"),
        ("/missing.png", "answered HTTP 404"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_an_image_the_guard_refuses_is_a_400_naming_the_part(
    image_stack: Stack, fake_llm: FakeLlm, images: str, path: str, says: str, stream: bool
) -> None:
    before = len(fake_llm.requests)
    r = query(image_stack, "gemini", images + path, stream=stream)
    error = assert_klai_error(r, 400, "image_url_refused")
    assert error["message"].startswith("payload.messages.0.content.1: ")
    assert says in error["message"]
    assert len(fake_llm.requests) == before  # the provider was never called


def test_the_openai_face_names_its_own_field(
    image_stack: Stack, fake_llm: FakeLlm, images: str
) -> None:
    r = httpx.post(
        f"{image_stack.http}/v1/chat/completions",
        headers={"authorization": f"Bearer {image_stack.api_key}"},
        json={
            "model": "anthropic/fake-text",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": images + "/page"}}],
                }
            ],
        },
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("messages.0.content.0: ")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["anthropic", "bedrock"])
def test_without_the_test_setting_a_loopback_url_is_a_400(
    stack: Stack, fake_llm: FakeLlm, images: str, provider: str, stream: bool
) -> None:
    before = len(fake_llm.requests)
    r = query(stack, provider, images + "/cat.png", stream=stream)
    error = assert_klai_error(r, 400, "image_url_refused")
    assert "resolves to a loopback address" in error["message"]
    assert len(fake_llm.requests) == before
