"""Provider-native messages, tools and tool choices read into the internal (OpenAI) form, and
what cannot be translated refused naming the exact field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from streaming_proxy.api.answers import parse
from streaming_proxy.contract import StreamRequest
from streaming_proxy.errors import ImageUrlRefused, ValidationFailed
from streaming_proxy.jobs import StreamJob
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.imagefetch import ImageFetcher
from streaming_proxy.providers.images import awaiting_fetch, inline_images

B64 = "iVBORw0KGgo="


def payload(**fields: Any) -> dict[str, Any]:
    return {"channels": ["c"], "actionName": "a", "payload": {"provider": "gemini", **fields}}


def messages_of(**fields: Any) -> list[dict[str, Any]]:
    body = parse(StreamRequest, payload(**fields))
    job = StreamJob(
        stream_id="st_1",
        app_id="dev",
        kind="llm",
        action_name="a",
        payload=body.payload,
        flush_interval_ms=0,
    )
    return job.llm_request.messages


def field_error(**fields: Any) -> dict[str, Any]:
    with pytest.raises(ValidationFailed) as caught:
        parse(StreamRequest, payload(**fields))
    (problem,) = caught.value.fields
    return dict(problem)


def test_gemini_parts_and_role_model_become_openai_content() -> None:
    messages = messages_of(
        messages=[
            {
                "role": "user",
                "parts": [
                    {"text": "Describe"},
                    {"inlineData": {"mimeType": "image/png", "data": B64}},
                ],
            },
            {"role": "model", "parts": [{"text": "A cat."}]},
            {"role": "user", "parts": [{"inline_data": {"mime_type": "image/webp", "data": B64}}]},
        ]
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/webp;base64,{B64}"}}
            ],
        },
    ]


def test_anthropic_image_blocks_become_image_url_parts() -> None:
    messages = messages_of(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Two cats"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/jpeg", "data": B64},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://img.test/cat.gif"}},
                ],
            }
        ]
    )
    assert messages[0]["content"][1:] == [
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{B64}"}},
        {"type": "image_url", "image_url": {"url": "https://img.test/cat.gif"}},
    ]


@pytest.mark.parametrize(
    ("message", "field", "says"),
    [
        (
            {"role": "user", "parts": [{"text": "a"}, {"functionCall": {"name": "f"}}]},
            "payload.messages.1.parts.1",
            "functionCall cannot be translated",
        ),
        (
            {
                "role": "user",
                "parts": [{"inlineData": {"mimeType": "application/pdf", "data": B64}}],
            },
            "payload.messages.1.parts.0",
            "media type",
        ),
        (
            {
                "role": "user",
                "parts": [{"inlineData": {"mimeType": "image/png", "data": "not base64!"}}],
            },
            "payload.messages.1.parts.0",
            "not valid base64",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "tool_use", "id": "x"}],
            },
            "payload.messages.1.content.1",
            "'tool_use' cannot be translated",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
            },
            "payload.messages.1.content.0",
            "Anthropic image block needs source",
        ),
        (
            {"role": "user", "content": "a", "parts": [{"text": "b"}]},
            "payload.messages.1",
            "content or parts",
        ),
        (
            {"role": "function", "parts": [{"text": "b"}]},
            "payload.messages.1.role",
            "Input should be",
        ),
    ],
)
def test_what_cannot_be_translated_is_refused_naming_the_field(
    message: dict[str, Any], field: str, says: str
) -> None:
    problem = field_error(messages=[{"role": "user", "content": "hi"}, message])
    assert problem["field"] == field
    assert says in problem["message"]


def test_a_gemini_message_without_parts_content_is_not_silently_empty() -> None:
    # Before: `parts` was an unknown extra field, and the message reached the model empty.
    assert messages_of(messages=[{"role": "user", "parts": [{"text": "hi"}]}])[0]["content"]


@pytest.mark.parametrize(
    ("tool", "function"),
    [
        (
            {"name": "ui_tool_hello_world", "description": "Say hello"},
            {"name": "ui_tool_hello_world", "description": "Say hello"},
        ),
        (
            {"name": "f", "parameters": {"type": "object"}},
            {"name": "f", "parameters": {"type": "object"}},
        ),
        (
            {"name": "f", "input_schema": {"type": "object"}},
            {"name": "f", "parameters": {"type": "object"}},
        ),
        ({"type": "function", "function": {"name": "f"}}, {"name": "f"}),
    ],
)
def test_bare_and_anthropic_tools_become_function_tools(
    tool: dict[str, Any], function: dict[str, Any]
) -> None:
    body = parse(StreamRequest, payload(messages=[{"role": "user", "content": "x"}], tools=[tool]))
    assert [t.model_dump() for t in body.payload.tools or []] == [
        {"type": "function", "function": function}
    ]


def test_a_bare_tool_with_a_bad_description_names_the_tool() -> None:
    problem = field_error(
        messages=[{"role": "user", "content": "x"}], tools=[{"name": "f", "description": 3}]
    )
    assert problem["field"] == "payload.tools.0"


@pytest.mark.parametrize(
    ("choice", "internal"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("any", "required"),
        ("AUTO", "auto"),
        ("ANY", "required"),
        ("NONE", "none"),
        (
            {"type": "function", "function": {"name": "f"}},
            {"type": "function", "function": {"name": "f"}},
        ),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
        ({"name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_every_tool_choice_spelling_is_read_into_one_form(choice: Any, internal: Any) -> None:
    body = parse(
        StreamRequest, payload(messages=[{"role": "user", "content": "x"}], toolChoice=choice)
    )
    assert body.payload.tool_choice == internal


@pytest.mark.parametrize("choice", ["sometimes", {"type": "tool"}, {"mode": "ANY"}, 3])
def test_an_unknown_tool_choice_names_the_field(choice: Any) -> None:
    problem = field_error(messages=[{"role": "user", "content": "x"}], toolChoice=choice)
    assert problem["field"] == "payload.toolChoice"


def remote_request() -> LlmRequest:
    image = {
        "type": "image_url",
        "image_url": {"url": "https://images.example/cat.png", "detail": "low"},
    }
    return LlmRequest(
        model="m",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "a"}, image]},
            {
                "role": "user",
                "content": [
                    image,
                    {"type": "image_url", "image_url": "http://images.example/dog.gif"},
                ],
            },
        ],
    )


def image_fetcher(answers: dict[str, httpx.Response], fetched: list[str]) -> ImageFetcher:
    def handler(request: httpx.Request) -> httpx.Response:
        fetched.append(request.url.path)
        return answers[request.url.path]

    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ImageFetcher(timeout_seconds=2, max_bytes=1024, resolver=resolve, http=client)


async def test_remote_images_are_fetched_once_each_and_inlined_in_place() -> None:
    fetched: list[str] = []
    answers = {
        "/cat.png": httpx.Response(200, headers={"content-type": "image/png"}, content=b"cat"),
        "/dog.gif": httpx.Response(200, headers={"content-type": "image/gif"}, content=b"dog"),
    }
    inlined = await inline_images(
        remote_request(), image_fetcher(answers, fetched), "payload.messages"
    )
    assert sorted(fetched) == ["/cat.png", "/dog.gif"]  # the repeated URL once
    cat = {"type": "image_url", "image_url": {"url": "data:image/png;base64,Y2F0", "detail": "low"}}
    assert inlined.messages == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, cat]},
        {
            "role": "user",
            "content": [
                cat,
                {"type": "image_url", "image_url": {"url": "data:image/gif;base64,ZG9n"}},
            ],
        },
    ]


async def test_a_failed_image_names_its_part() -> None:
    answers = {
        "/cat.png": httpx.Response(200, headers={"content-type": "image/png"}, content=b"cat"),
        "/dog.gif": httpx.Response(200, headers={"content-type": "text/html"}, content=b"<p>"),
    }
    with pytest.raises(ImageUrlRefused) as caught:
        await inline_images(remote_request(), image_fetcher(answers, []), "messages")
    assert caught.value.message.startswith("messages.1.content.1: the image URL is not a png")
    assert caught.value.fields[0]["field"] == "messages.1.content.1"


def test_prepare_sees_a_placeholder_image_for_each_url() -> None:
    checked = awaiting_fetch(remote_request())
    urls = [
        p["image_url"]["url"]
        for m in checked.messages
        for p in m["content"]
        if p["type"] == "image_url"
    ]
    assert len(urls) == 3 and all(u.startswith("data:image/png;base64,") for u in urls)
