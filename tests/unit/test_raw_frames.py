"""RawFrames: what `options.rawResponse` keeps of a provider's stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from httpx_sse import ServerSentEvent

from streaming_proxy.providers.raw import (
    MAX_RAW_BYTES,
    RawFrames,
    begin_round,
    record_frame,
    recording,
    tapped,
)


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
