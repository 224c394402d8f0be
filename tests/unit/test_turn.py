"""TurnState: one model turn accumulated from its events, with no I/O."""

from __future__ import annotations

from streaming_proxy.events import Finish, TextDelta, ThinkingDelta, ToolCallDelta, Usage
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.turn import TurnState

REQUEST = LlmRequest(model="m", messages=[{"role": "user", "content": "four words of prompt"}])


def test_text_reasoning_and_tool_calls_are_assembled_in_order() -> None:
    turn = TurnState()
    for event in [
        ThinkingDelta("hm "),
        TextDelta("Hel"),
        TextDelta("lo"),
        ToolCallDelta(1, id="b", name="second", arguments="{}"),
        ToolCallDelta(0, id="a", name="first"),
        ToolCallDelta(0, arguments='{"x":'),
        ToolCallDelta(0, arguments=" 1}"),
        Finish("tool_calls"),
    ]:
        turn.handle(event)
    assert (turn.answer(), turn.reasoning(), turn.finish) == ("Hello", "hm ", "tool_calls")
    calls = turn.tool_calls()
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("a", "first", '{"x": 1}'),
        ("b", "second", "{}"),
    ]


def test_usage_counts_replace_earlier_ones_and_missing_counts_are_estimated() -> None:
    turn = TurnState()
    turn.handle(Usage(prompt_tokens=10))
    turn.handle(Usage(completion_tokens=3))
    turn.handle(Usage(completion_tokens=7))  # cumulative: replaced, never added
    assert turn.reported_usage(REQUEST) == {
        "prompt_tokens": 10,
        "completion_tokens": 7,
        "total_tokens": 17,
        "estimated": False,
    }
    silent = TurnState()
    silent.handle(TextDelta("some words the model said"))
    usage = silent.reported_usage(REQUEST)
    assert usage["estimated"] is True
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
