"""The /v1 face's tool call chunks as the official SDK reassembles them, whatever indices the
provider used: a compatible server streaming each call whole at index 0, or indices with
gaps. The SDK's own accumulator (`ChatCompletionStreamState`, behind
`client.chat.completions.stream`) reads the frames."""

from __future__ import annotations

import json

from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from streaming_proxy.config import Settings
from streaming_proxy.events import Finish, ProviderEvent, TextDelta, ToolCallDelta
from streaming_proxy.openai_format import ChunkBuilder, completion
from streaming_proxy.relay import Relay
from streaming_proxy.turn import TurnState

from .test_relay import Scripted, job


def sdk_calls(events: list[ProviderEvent]) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of each call, as the SDK assembles the frames of `events`."""
    builder = ChunkBuilder("chatcmpl-0123456789abcdef", "llama3")
    state = ChatCompletionStreamState()
    for event in events:
        frame = builder.frame_for(event)
        if frame is not None:
            assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
            state.handle_chunk(ChatCompletionChunk.model_validate(json.loads(frame[6:])))
    state.handle_chunk(ChatCompletionChunk.model_validate(builder.chunk({}, "tool_calls")))
    message = state.get_final_completion().choices[0].message
    return [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]


def turn_calls(events: list[ProviderEvent]) -> list[tuple[str, str, str]]:
    """The same calls as the proxy itself counts them (`stream: false`, threads, Klai)."""
    turn = TurnState()
    for event in events:
        turn.handle(event)
    return [(c.id, c.name, c.arguments) for c in turn.tool_calls()]


def test_calls_streamed_whole_at_one_index_stay_separate_calls_in_the_sdk() -> None:
    # Before: the second call's id and name were dropped and its arguments appended to the
    # first's, so the SDK saw one call `{"x":1}{"y":2}` where `stream: false` had two.
    events: list[ProviderEvent] = [
        ToolCallDelta(0, id="call_a", name="lookup", arguments='{"x":'),
        ToolCallDelta(0, arguments="1}"),
        ToolCallDelta(0, id="call_b", name="weather", arguments='{"y":2}'),
    ]
    expected = [("call_a", "lookup", '{"x":1}'), ("call_b", "weather", '{"y":2}')]
    assert sdk_calls(events) == expected == turn_calls(events)


def test_indices_with_gaps_reach_the_sdk_numbered_without_gaps() -> None:
    # Before: index 3 after index 0 made the SDK's accumulator raise IndexError mid-stream.
    events: list[ProviderEvent] = [
        TextDelta("Checking."),
        ToolCallDelta(0, id="call_a", name="lookup", arguments="{}"),
        ToolCallDelta(3, id="call_b", name="weather", arguments='{"city":'),
        ToolCallDelta(3, arguments=' "Oslo"}'),
        ToolCallDelta(0, arguments=""),
    ]
    expected = [("call_a", "lookup", "{}"), ("call_b", "weather", '{"city": "Oslo"}')]
    assert sdk_calls(events) == expected == turn_calls(events)


def test_a_call_without_an_id_gets_one_and_a_later_id_does_not_split_it() -> None:
    events: list[ProviderEvent] = [
        ToolCallDelta(0, name="lookup", arguments='{"q":'),
        ToolCallDelta(0, id="late_id", arguments=' "a"}'),
    ]
    [(call_id, name, arguments)] = sdk_calls(events)
    assert call_id.startswith("call_") and (name, arguments) == ("lookup", '{"q": "a"}')


async def test_a_call_the_provider_gave_no_id_has_the_same_id_streamed_or_not() -> None:
    # Before: `stream: false` answered `"id": ""` for such a call (the SDK caller then sends
    # `tool_call_id: ""` back), while the stream made one up.
    events: list[ProviderEvent] = [
        ToolCallDelta(0, name="lookup", arguments="{}"),
        ToolCallDelta(1, name="weather", arguments="{}"),
    ]
    streamed = [call_id for call_id, _, _ in sdk_calls(events)]
    # The relay ends the stream (`stream: false` reads its outcome) with the ids it made up.
    the_job = job().model_copy(update={"stream_id": "st_0123456789abcdef"})
    script = Scripted([*events, Finish("tool_calls")])
    outcome = await Relay(the_job, script, [], settings=Settings()).run()
    whole = completion("chatcmpl-0123456789abcdef", "llama3", outcome)
    ids = [call["id"] for call in whole["choices"][0]["message"]["tool_calls"]]
    assert ids == streamed and all(ids) and len(set(ids)) == 2
