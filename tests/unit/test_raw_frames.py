"""RawFrames: what `options.rawResponse` keeps of a provider's stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from httpx_sse import ServerSentEvent

from streaming_proxy import redact
from streaming_proxy.providers.raw import (
    MAX_RAW_BYTES,
    RawFrames,
    begin_round,
    record_frame,
    recording,
    tapped,
)
from streaming_proxy.redact import REDACTED


def test_frames_are_parsed_kept_per_call_and_the_done_marker_left_out() -> None:
    frames = RawFrames("openai")
    frames.begin()
    frames.add('{"choices": []}')
    frames.add("[DONE]")
    frames.begin()
    frames.add("not json")
    assert frames.as_json() == {
        "provider": "openai",
        "rounds": [[{"choices": []}], ["not json"]],
        "truncated": False,
    }


def test_credentials_a_frame_echoes_are_scrubbed() -> None:
    frames = RawFrames("openai")
    frames.add(json.dumps({"echo": "Authorization: Bearer abcdefghijklmnop"}))
    assert "abcdefghijklmnop" not in json.dumps(frames.as_json())


def test_past_the_cap_the_rest_is_left_out_and_said_so() -> None:
    frames = RawFrames("gemini")
    piece = json.dumps({"text": "x" * 1000})
    for _ in range(MAX_RAW_BYTES // len(piece) + 10):
        frames.add(piece)
    kept = frames.as_json()
    assert kept["truncated"] is True
    assert sum(len(json.dumps(f)) for f in kept["rounds"][0]) <= MAX_RAW_BYTES


def test_the_cap_counts_bytes_not_characters() -> None:
    frames = RawFrames("openai")
    piece = json.dumps({"text": "\U0001f600" * 1000}, ensure_ascii=False)  # 4 bytes each
    for _ in range(MAX_RAW_BYTES // len(piece) + 10):
        frames.add(piece)
    kept = frames.as_json()
    assert kept["truncated"] is True
    size = sum(len(json.dumps(f, ensure_ascii=False).encode()) for f in kept["rounds"][0])
    assert size <= MAX_RAW_BYTES


def test_nothing_is_recorded_outside_a_recording_block() -> None:
    begin_round()
    record_frame({"messageStart": {"role": "assistant"}})  # no error, nowhere to go
    with recording("bedrock") as frames:
        begin_round()
        record_frame({"messageStart": {"role": "assistant"}, "blob": b"\x00\x01"})
    record_frame({"late": True})
    assert frames.rounds == [[{"messageStart": {"role": "assistant"}, "blob": "AAE="}]]


def test_a_tapped_stream_records_each_event_in_a_round_of_its_own() -> None:
    async def source() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(data='{"n": 1}')
        yield ServerSentEvent(data='{"n": 2}')

    async def run() -> list[list[object]]:
        with recording("anthropic") as frames:
            for _ in range(2):
                seen = [e.data async for e in tapped(source())]
                assert seen == ['{"n": 1}', '{"n": 2}']
        return frames.rounds

    assert asyncio.run(run()) == [[{"n": 1}, {"n": 2}], [{"n": 1}, {"n": 2}]]


KEY = "QZ7" + "X4K9" * 6 + "W2"


def chunk(content: str) -> str:
    return json.dumps(
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": content}}]}
    )


def contents(kept: dict[str, Any]) -> str:
    return "".join(f["choices"][0]["delta"]["content"] for f in kept["rounds"][0])


def test_a_key_the_model_streams_in_pieces_is_replaced_across_frames() -> None:
    """The answer's text had it replaced (textguard); the frames joined gave it whole."""
    text = f"your key is {KEY}, keep it"
    frames = RawFrames("openai", own_key=KEY)
    for start in range(0, len(text), 5):
        frames.add(chunk(text[start : start + 5]))
    kept = frames.as_json()
    assert contents(kept) == text.replace(KEY, REDACTED)
    assert KEY[5:9] not in json.dumps(kept)
    assert len(kept["rounds"][0]) == len(range(0, len(text), 5))  # every frame kept
    assert frames.rounds[0][0] == json.loads(chunk(text[:5]))  # the frames as they came


def test_a_key_written_in_json_escapes_is_replaced() -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)
    frames = RawFrames("openai", own_key=KEY)
    frames.add('{"choices": [{"index": 0, "delta": {"content": "k=' + escaped + '"}}]}')
    frames.add('{"error": {"message": "bad key ' + escaped + '"}}')
    kept = frames.as_json()
    assert KEY not in json.dumps(kept)
    assert contents({"rounds": [kept["rounds"][0][:1]]}) == "k=" + REDACTED
    assert kept["rounds"][0][1] == {"error": {"message": f"bad key {REDACTED}"}}


def test_a_process_key_in_text_frames_cut_in_two_is_replaced() -> None:
    redact.remember("SERVERKEY-0123456789abcdef")
    frames = RawFrames("compat")
    frames.add("not json SERVERKEY-0123")
    frames.add("456789abcdef and more")
    assert frames.as_json()["rounds"] == [["not json " + REDACTED, " and more"]]
