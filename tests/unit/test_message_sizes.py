"""Every message fits one WebSocket post: text is measured by its JSON-encoded width, where
`"`, `\\n` and other control characters take 2 to 6 bytes."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest

from streaming_proxy import envelopes
from streaming_proxy.channels.lane import Outgoing, compact, take_next
from streaming_proxy.envelopes import MAX_CONTENT_BYTES, encode, json_width, split_text
from streaming_proxy.events import PlannedCall
from streaming_proxy.tools.messages import function_call_content, reaches_pages

# API Gateway refuses a WebSocket message over 128 KB.
POST_LIMIT = 128 * 1024


def deltas(*contents: str) -> deque[Outgoing]:
    return deque(
        Outgoing({"streamId": "st_1", "seq": seq, "type": "delta", "content": content})
        for seq, content in enumerate(contents, start=1)
    )


@pytest.mark.parametrize("char", ['"', "\n", "\x01", "\\"])
def test_merged_deltas_of_escaped_text_never_pass_the_post_limit(char: str) -> None:
    # Each piece is 60 KB once escaped in JSON (a postable delta), 10-30 KB of raw text: by
    # raw length several would fit the content limit together, which no post could carry.
    piece = char * (60_000 // json_width(char))
    queue = deltas(*[piece] * 8)
    while queue:
        message, _ = take_next(queue)
        assert len(message.encoded("room")) <= POST_LIMIT
        assert json_width(message.envelope["content"]) <= MAX_CONTENT_BYTES


def test_plain_text_still_merges_up_to_the_content_limit() -> None:
    queue = deltas(*["ab" * 10_000] * 6)  # 20 KB each, no escapes: four fit in 96 KB
    message, replaced = take_next(queue)
    assert replaced == 4 and message.first_seq == 1 and message.seq == 4
    assert message.content_width == 80_000


def test_a_compacted_backlog_of_quotes_and_newlines_stays_postable() -> None:
    text = 'say "hi"\n' * 2_000  # 18 KB raw, 24 KB escaped
    queue = deltas(*[text] * 20)
    compact(queue)
    assert "".join(m.envelope["content"] for m in queue) == text * 20
    assert all(len(m.encoded("room")) <= POST_LIMIT for m in queue)
    assert len(queue) < 20  # it did merge


def reference_split(text: str, max_bytes: int) -> list[str]:
    """split_text as it was before its fast path: the behaviour it must keep."""
    if len(json.dumps(text, ensure_ascii=False).encode("utf-8")) <= max_bytes:
        return [text]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        width = len(json.dumps(char, ensure_ascii=False).encode("utf-8")) - 2
        if size + width > max_bytes and current:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    if current:
        pieces.append("".join(current))
    return pieces


@pytest.mark.parametrize(
    "text", ["", "plain", '"quoted"\n', "ünïcödé 日本語 🎉", "\x00\x1f" * 5, "x" * 40, "é" * 13]
)
@pytest.mark.parametrize("max_bytes", [8, 20, 26, 32, 80, 200, 245, 246, 247])
def test_split_text_behaves_exactly_as_before(text: str, max_bytes: int) -> None:
    assert split_text(text, max_bytes) == reference_split(text, max_bytes)


def test_short_text_is_not_encoded_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_encoding(text: str) -> int:
        raise AssertionError("encoded a text that could not have been too long")

    monkeypatch.setattr(envelopes, "json_width", no_encoding)
    assert split_text("\x01" * 100, max_bytes=602) == ["\x01" * 100]
    with pytest.raises(AssertionError):
        split_text("\x01" * 100, max_bytes=601)  # might not fit: measured


def test_a_snapshot_whose_other_fields_leave_no_room_is_not_cut_into_crumbs() -> None:
    """A base near the message limit once split the text one character a part (tens of
    thousands of posts, each over the limit): parts keep a floor of text instead."""
    base = {"type": "snapshot", "seq": 3, "pendingToolCalls": [{"blob": "y" * 125_000}]}
    parts = envelopes.snapshot_messages(base, "z" * 50_000)
    assert len(parts) <= 50_000 // envelopes.MIN_PART_BYTES + 1
    assert "".join(p["content"] for p in parts) == "z" * 50_000


def planned(name: str, arguments: dict[str, object]) -> PlannedCall:
    return PlannedCall(
        id=f"tc_{name}", model_id=name, name=name, arguments=arguments, frontend=True
    )


def function_call(*calls: PlannedCall) -> dict[str, Any]:
    return {
        "actionName": "a",
        "streamId": "st_1",
        "seq": 4,
        "type": "function_call",
        "content": function_call_content(list(calls)),
    }


def test_a_function_call_too_large_for_one_message_leaves_out_the_largest_arguments() -> None:
    small = planned("ui_small", {"city": "Oslo", "userMessage": "Looking"})
    large = planned("ui_large", {"blob": "é" * 30_000, "userMessage": "Big"})
    larger = planned("ui_larger", {"blob": "x" * 90_000})
    whole = function_call(small, large, larger)
    fitted = envelopes.fitted_function_call(whole)
    assert len(encode(fitted)) <= envelopes.MAX_MESSAGE_BYTES
    assert {k: v for k, v in fitted.items() if k != "content"} == {
        k: v for k, v in whole.items() if k != "content"
    }
    by_name = {entry["name"]: entry for entry in fitted["content"]["functions"]}
    assert by_name["ui_small"]["arguments"] == small.arguments
    assert by_name["ui_small"]["userMessage"] == "Looking"
    assert by_name["ui_large"]["arguments"] == large.arguments  # fits once the larger is out
    left_out = by_name["ui_larger"]
    assert (left_out["arguments"], left_out["userMessage"]) == (None, None)
    assert left_out["argumentsBytes"] == len(json.dumps(larger.arguments, separators=(",", ":")))
    assert [e["toolCallId"] for e in fitted["content"]["functions"]] == [
        "tc_ui_small",
        "tc_ui_large",
        "tc_ui_larger",
    ]
    # The relay's own envelope (the SSE caller's) is untouched.
    assert whole["content"]["functions"][2]["arguments"] == larger.arguments


def test_a_function_call_that_fits_is_sent_whole() -> None:
    whole = function_call(
        planned("ui_a", {"blob": "x" * 40_000}), planned("ui_b", {"blob": "x" * 40_000})
    )
    assert envelopes.fitted_function_call(whole) is whole


def test_only_a_frontend_call_whose_llm_tool_call_fits_one_message_reaches_pages() -> None:
    # `arguments` goes twice into an llmToolCall (arguments and functions[0].arguments).
    assert reaches_pages(planned("ui_ok", {"blob": "x" * 40_000}))
    assert not reaches_pages(planned("ui_big", {"blob": "x" * 50_000}))
    # Escapes count: 20,000 quotes take 40,000 bytes each time.
    assert not reaches_pages(planned("ui_quotes", {"blob": '"' * 25_000}))
