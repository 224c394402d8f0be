"""Shared reading of OpenAI-style messages and tools for the non-OpenAI adapters."""

from __future__ import annotations

from typing import Any

import pytest

from streaming_proxy.errors import UpstreamError, ValidationFailed
from streaming_proxy.providers.translate import (
    FunctionTool,
    ImagePart,
    RedactedBlock,
    TextPart,
    ThinkingBlock,
    ToolChoice,
    content_parts,
    event_data,
    function_tools,
    image_part,
    instructions_of,
    merge_adjacent,
    parse_arguments,
    parse_tool_choice,
    reasoning_blocks_of,
    text_of,
    tool_calls_of,
    tool_result_of,
)


def test_base64_data_url_is_decoded() -> None:
    part = image_part("data:image/webp;base64,aGVsbG8=")

    assert (part.mime, part.data) == ("image/webp", b"hello")
    assert part.base64() == "aGVsbG8="


def test_percent_encoded_data_url_is_decoded() -> None:
    assert image_part("data:image/svg+xml,%3Csvg%2F%3E").data == b"<svg/>"


def test_http_url_keeps_the_url_and_guesses_the_mime_type() -> None:
    assert image_part("https://x.test/a/cat.PNG?v=2") == ImagePart(
        url="https://x.test/a/cat.PNG?v=2", mime="image/png"
    )


@pytest.mark.parametrize(
    "url",
    ["data:image/png;base64,@@@", "data:image/png;base64", "file:///etc/passwd", "ftp://x/y.png"],
)
def test_bad_image_urls_fail_validation(url: str) -> None:
    with pytest.raises(ValidationFailed):
        image_part(url)


def test_content_parts_from_strings_and_part_lists() -> None:
    assert content_parts("hi") == [TextPart("hi")]
    assert content_parts("") == []
    assert content_parts(None) == []
    assert content_parts(
        [
            {"type": "text", "text": "a"},
            {"type": "text", "text": ""},
            {"type": "image_url", "image_url": "https://x.test/b.jpg"},
        ]
    ) == [TextPart("a"), ImagePart(url="https://x.test/b.jpg", mime="image/jpeg")]


@pytest.mark.parametrize(
    "content", [[{"type": "input_audio", "input_audio": {}}], [{"type": "image_url"}], 42]
)
def test_unsupported_content_fails_validation(content: Any) -> None:
    with pytest.raises(ValidationFailed):
        content_parts(content)


def test_text_of_and_instructions_of() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "one"},
        {"role": "user", "content": "not me"},
        {
            "role": "developer",
            "content": [{"type": "text", "text": "two"}, {"type": "text", "text": "three"}],
        },
    ]

    assert text_of(messages[2]["content"]) == "two\nthree"
    assert instructions_of(messages) == "one\n\ntwo\nthree"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [('{"a": [1, "é"]}', {"a": [1, "é"]}), ("", {}), (None, {}), ({"k": 1}, {"k": 1})],
)
def test_parse_arguments(raw: Any, expected: dict[str, Any]) -> None:
    assert parse_arguments(raw) == expected


@pytest.mark.parametrize("raw", ["{", "[1, 2]", "3"])
def test_arguments_that_are_not_a_json_object_fail_validation(raw: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_arguments(raw)


def test_tool_calls_need_an_id_and_a_name() -> None:
    ok = {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}
    assert [(c.id, c.name, c.arguments) for c in tool_calls_of(ok)] == [("c", "f", {})]
    with pytest.raises(ValidationFailed):
        tool_calls_of({"tool_calls": [{"function": {"name": "f"}}]})
    with pytest.raises(ValidationFailed):
        tool_calls_of({"tool_calls": [{"id": "c", "function": {}}]})


def test_function_tools_accept_wrapped_and_bare_functions() -> None:
    tools = function_tools(
        [
            {
                "type": "function",
                "function": {"name": "a", "description": "A", "parameters": {"type": "object"}},
            },
            {"name": "b"},
        ]
    )

    assert tools == [
        FunctionTool("a", "A", {"type": "object"}),
        FunctionTool("b", None, {"type": "object", "properties": {}}),
    ]
    with pytest.raises(ValidationFailed):
        function_tools([{"type": "code_interpreter"}])


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ("required", ToolChoice("required")),
        ({"type": "function", "function": {"name": "f"}}, ToolChoice("function", "f")),
        # Anthropic's and Gemini's spellings, and Klai's short forms.
        ("any", ToolChoice("required")),
        ("AUTO", ToolChoice("auto")),
        ("ANY", ToolChoice("required")),
        ("NONE", ToolChoice("none")),
        ({"type": "any"}, ToolChoice("required")),
        ({"type": "tool", "name": "f"}, ToolChoice("function", "f")),
        ({"name": "f"}, ToolChoice("function", "f")),
    ],
)
def test_tool_choice(choice: Any, expected: ToolChoice | None) -> None:
    assert parse_tool_choice(choice) == expected


@pytest.mark.parametrize(
    "choice",
    ["anything", "validated", {"type": "function"}, {"function": {"name": 3}}, {"type": "tool"}],
)
def test_unknown_tool_choice_fails_validation_naming_the_field(choice: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_tool_choice(choice)
    assert caught.value.fields == [{"field": "payload.toolChoice", "message": caught.value.message}]


def test_merge_adjacent_joins_same_role_turns_in_order() -> None:
    turns = [
        {"role": "user", "content": [1]},
        {"role": "user", "content": [2, 3]},
        {"role": "assistant", "content": [4]},
        {"role": "user", "content": [5]},
    ]

    assert merge_adjacent(turns, "content") == [
        {"role": "user", "content": [1, 2, 3]},
        {"role": "assistant", "content": [4]},
        {"role": "user", "content": [5]},
    ]
    assert turns[0] == {"role": "user", "content": [1]}


@pytest.mark.parametrize("data", ["not json", "[1]"])
def test_event_data_that_is_not_a_json_object_is_an_upstream_error(data: str) -> None:
    with pytest.raises(UpstreamError, match="acme"):
        event_data(data, "acme")


def test_reasoning_blocks_keep_their_order_and_signatures() -> None:
    message = {
        "reasoning_blocks": [
            {"type": "thinking", "thinking": "a", "signature": "s1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "thinking", "thinking": "b", "signature": ""},
            {"type": "thinking", "thinking": "c"},
        ]
    }

    assert reasoning_blocks_of(message) == [
        ThinkingBlock("a", "s1"),
        RedactedBlock("opaque"),
        ThinkingBlock("b", None),
        ThinkingBlock("c", None),
    ]
    assert reasoning_blocks_of({}) == []


def test_a_tool_calls_thought_signature_is_read() -> None:
    message = {
        "tool_calls": [
            {"id": "a", "function": {"name": "f"}, "thought_signature": "sig"},
            {"id": "b", "function": {"name": "g"}},
        ]
    }

    assert [c.signature for c in tool_calls_of(message)] == ["sig", None]


@pytest.mark.parametrize(
    ("content", "value", "failed"),
    [
        ('{"success": false, "message": "no"}', {"success": False, "message": "no"}, True),
        ([{"type": "text", "text": '{"success": true}'}], {"success": True}, False),
        ('{"success": 0}', {"success": 0}, False),
        ("plain words", None, False),
        ("[false]", [False], False),
    ],
)
def test_tool_results_parse_json_and_know_when_they_failed(
    content: Any, value: Any, failed: bool
) -> None:
    result = tool_result_of({"role": "tool", "tool_call_id": "c1", "content": content})

    assert (result.call_id, result.value, result.failed) == ("c1", value, failed)
