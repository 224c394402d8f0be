"""Tool calls as compatible servers stream them, badly: each call complete in a chunk of
its own, all at `index` 0 or with no index (Gemini's OpenAI-compatible endpoint leaves it
out). Calls of different ids are different calls, never one with both argument strings."""

from __future__ import annotations

from streaming_proxy.events import ToolCallDelta
from streaming_proxy.outcome import ToolCall
from streaming_proxy.turn import TurnState


def calls_of(*events: ToolCallDelta) -> list[ToolCall]:
    turn = TurnState()
    for event in events:
        turn.handle(event)
    return turn.tool_calls()


def test_calls_of_other_ids_at_one_index_stay_apart() -> None:
    calls = calls_of(
        ToolCallDelta(0, id="call_a", name="lookup_stock", arguments='{"sku": "A1"}'),
        ToolCallDelta(0, id="call_b", name="get_weather", arguments='{"city": '),
        ToolCallDelta(0, arguments='"Oslo"}'),
        ToolCallDelta(1, id="call_c", name="search", arguments="{}"),
    )
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_a", "lookup_stock", '{"sku": "A1"}'),
        ("call_b", "get_weather", '{"city": "Oslo"}'),
        ("call_c", "search", "{}"),
    ]


def test_a_call_whose_id_comes_again_with_each_fragment_stays_one_call() -> None:
    calls = calls_of(
        ToolCallDelta(0, id="call_a", name="lookup_stock", arguments='{"sku": '),
        ToolCallDelta(0, id="call_a", arguments='"A1"}'),
    )
    assert [(c.id, c.arguments) for c in calls] == [("call_a", '{"sku": "A1"}')]
