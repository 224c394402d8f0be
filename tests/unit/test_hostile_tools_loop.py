"""The tool loop against a model that misbehaves: ids it repeats, within a round or from
earlier turns of the conversation."""

from __future__ import annotations

from streaming_proxy.events import Finish, ToolCallsReady
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.gemini_request import gemini_contents
from streaming_proxy.tools.loop import ToolLoop
from tests.unit.test_tool_loop import (
    ANSWER_ROUND,
    OFFERED,
    REQUEST,
    RoundsProvider,
    Runner,
    ask,
    collect,
)


async def test_a_call_id_the_model_repeats_in_one_round_is_made_unique() -> None:
    # Two calls under one id: each result must still answer its own call. Gemini matches
    # results to calls by the id's name (both were named after the last call), Anthropic
    # and Bedrock refuse a repeated tool_use id outright.
    twice = [
        *ask(0, "call_1", "lookup_stock", '{"sku": "A1"}'),
        *ask(1, "call_1", "get_weather", '{"city": "Oslo"}'),
        Finish("tool_calls"),
    ]
    provider = RoundsProvider([twice, ANSWER_ROUND])
    events = await collect(ToolLoop(provider, Runner(), max_rounds=8), REQUEST)  # type: ignore[arg-type]
    ready = next(e for e in events if isinstance(e, ToolCallsReady))
    assert ready.calls[0].model_id == "call_1" and ready.calls[1].model_id != "call_1"
    sent = provider.requests[1].messages
    ids = [c["id"] for c in sent[1]["tool_calls"]]
    assert [m["tool_call_id"] for m in sent[2:]] == ids and len(set(ids)) == 2
    parts = [p for c in gemini_contents(sent) for p in c["parts"]]
    answers = [p["functionResponse"] for p in parts if "functionResponse" in p]
    assert [a["name"] for a in answers] == ["lookup_stock", "get_weather"]
    assert [a["response"]["message"] for a in answers] == ["lookup_stock done", "get_weather done"]


async def test_a_call_id_already_in_the_conversation_is_not_used_again() -> None:
    # The mock names its calls call_mock_<n> every round, some compatible servers do too: a
    # thread would hold the same tool_use id in several turns.
    earlier = [
        {"role": "user", "content": "Stock?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "lookup_stock", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": '{"success": true}'},
        {"role": "assistant", "content": "12."},
        {"role": "user", "content": "And now?"},
    ]
    again = [*ask(0, "call_0", "lookup_stock", '{"sku": "A1"}'), Finish("tool_calls")]
    provider = RoundsProvider([again, again, ANSWER_ROUND])
    request = LlmRequest(model="m", messages=earlier, tools=OFFERED)
    await collect(ToolLoop(provider, Runner(), max_rounds=8), request)  # type: ignore[arg-type]
    sent = provider.requests[2].messages
    ids = [c["id"] for m in sent for c in m.get("tool_calls") or []]
    assert ids[0] == "call_0" and len(set(ids)) == 3
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == ids
