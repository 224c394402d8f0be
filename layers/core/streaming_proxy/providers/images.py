"""http(s) image URLs fetched (imagefetch.py) and inlined as base64 `data:` URLs, once per
stream, before the provider is called, for the providers that take images only as bytes.

Gemini and Bedrock take image bytes only. Anthropic could fetch a `source {type: "url"}`
itself, but it is inlined too, as Klai does: every provider then sees the same image, a URL
fails the same way (a 400 naming the part, before anything is published) and Anthropic's
fetcher's own limits never surface mid-stream. OpenAI, Azure and OpenAI-compatible endpoints
receive the URL as sent (OpenAI fetches it itself).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

from ..errors import ImageUrlRefused
from ..events import StreamEvent
from .base import EventSource, LlmRequest
from .imagefetch import FetchedImage, ImageFetcher

# What prepare() checks in place of an image not fetched yet (any valid image would do).
_PLACEHOLDER = "data:image/png;base64,iVBORw0KGgo="

# (message index, part index, url)
_Remote = tuple[int, int, str]


def remote_images(messages: list[dict[str, Any]]) -> Iterator[_Remote]:
    """Every http(s) image URL in the messages' content parts, in order."""
    for m, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for p, part in enumerate(content):
            url = _image_url(part)
            if url is not None and url.startswith(("http://", "https://")):
                yield m, p, url


def _image_url(part: Any) -> str | None:
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return None
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    return url if isinstance(url, str) else None


def awaiting_fetch(request: LlmRequest) -> LlmRequest:
    """The request as `prepare` checks it before the fetch: each URL stands for an image."""
    remote = list(remote_images(request.messages))
    if not remote:
        return request
    return _with_images(request, {(m, p): _PLACEHOLDER for m, p, _ in remote})


async def inline_images(request: LlmRequest, fetcher: ImageFetcher, field: str) -> LlmRequest:
    """`request` with each http(s) image URL replaced by its bytes; all fetched at once.
    A failure is ImageUrlRefused naming the first failing part (`{field}.2.content.0`)."""
    remote = list(remote_images(request.messages))
    if not remote:
        return request
    urls = list(dict.fromkeys(url for _, _, url in remote))
    results = await asyncio.gather(*(fetcher.fetch(u) for u in urls), return_exceptions=True)
    fetched = dict(zip(urls, results, strict=True))
    inlined: dict[tuple[int, int], str] = {}
    for m, p, url in remote:
        result = fetched[url]
        if isinstance(result, ImageUrlRefused):
            where = f"{field}.{m}.content.{p}"
            raise ImageUrlRefused(
                f"{where}: {result.message}", fields=[{"field": where, "message": result.message}]
            ) from result
        if isinstance(result, BaseException):
            raise result
        inlined[(m, p)] = _data_url(result)
    return _with_images(request, inlined)


def _data_url(image: FetchedImage) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


def _with_images(request: LlmRequest, urls: dict[tuple[int, int], str]) -> LlmRequest:
    messages = list(request.messages)
    for m in {m for m, _ in urls}:
        content = list(messages[m]["content"])
        for (mm, p), url in urls.items():
            if mm == m:
                image = content[p].get("image_url")
                kept = image if isinstance(image, dict) else {}  # e.g. OpenAI's `detail`
                content[p] = {**content[p], "image_url": {**kept, "url": url}}
        messages[m] = {**messages[m], "content": content}
    return replace(request, messages=messages)


class ImageInliner:
    """An event source whose request reaches `source` with its image URLs inlined. It wraps
    the tool loop, not the provider, so images are fetched once, not once per round."""

    def __init__(self, source: EventSource, fetcher: ImageFetcher, field: str) -> None:
        self.name = source.name
        self._source = source
        self._fetcher = fetcher
        self._field = field

    async def stream(self, request: LlmRequest) -> AsyncIterator[StreamEvent]:
        inlined = await inline_images(request, self._fetcher, self._field)
        events = self._source.stream(inlined)
        try:
            async for event in events:
                yield event
        finally:  # the source (an async generator) closes its upstream response
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()
