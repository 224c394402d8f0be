"""ChunkBuilder.frame_for: the bytes of the whole chunk encoded, from its per-stream template."""

from __future__ import annotations

import json

import pytest

from streaming_proxy.events import ProviderEvent, TextDelta, ThinkingDelta, ToolCallDelta
from streaming_proxy.openai_format import ChunkBuilder, sse_frame

TEXTS = ["hi", '"quoted" \\ back', "é 中 😀", "\u2028\u2029", "\x00 nul", "lone \ud800", "</x>"]


def builders(model: str) -> tuple[ChunkBuilder, ChunkBuilder]:
    fast, whole = ChunkBuilder("chatcmpl-1", model), ChunkBuilder("chatcmpl-1", model)
    whole.created = fast.created
    return fast, whole


@pytest.mark.parametrize("model", ["gpt-4o", 'quote"model', "\x00"])
def test_every_frame_is_the_whole_chunk_encoded(model: str) -> None:
    fast, whole = builders(model)
    events: list[ProviderEvent] = [TextDelta("first")]
    events += [kind(text) for text in TEXTS for kind in (TextDelta, ThinkingDelta)]
    events += [ToolCallDelta(index=0, id="c", name="f", arguments="{}"), TextDelta("")]
    for event in events:
        chunk = whole.for_event(event)
        assert fast.frame_for(event) == (None if chunk is None else sse_frame(chunk))


def test_the_first_frame_carries_the_role_and_later_ones_only_the_text() -> None:
    fast, _ = builders("m")
    first, second = fast.frame_for(TextDelta("a")), fast.frame_for(TextDelta("b"))
    assert first is not None and second is not None
    assert json.loads(first[6:])["choices"][0]["delta"] == {"role": "assistant", "content": "a"}
    assert json.loads(second[6:])["choices"][0]["delta"] == {"content": "b"}
