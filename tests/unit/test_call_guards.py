"""A secret the model writes into a tool call's arguments leaves no more than a text's
would: streamed fragments (the OpenAI face) are guarded per call however they are cut, and
the calls the tool loop runs (webhook, pages, thread) carry it replaced."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from streaming_proxy.config import Settings
from streaming_proxy.events import Finish, ProviderEvent, TextDelta, ToolCallDelta, ToolCallsReady
from streaming_proxy.openai_format import ChunkBuilder
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.redact import REDACTED
from streaming_proxy.relay import Relay
from streaming_proxy.textguard import HOLD_FROM
from streaming_proxy.tools.loop import ToolLoop
from tests.unit.test_relay import Recorder, Scripted, job
from tests.unit.test_tool_loop import ANSWER_ROUND, OFFERED, RoundsProvider, Runner, collect

# The request's own key: upper case and digits, where the arguments around it are lower case.
KEY = "QZ7" + "X4K9" * 6 + "W2"


class Fragments:
    """An observer: the events the OpenAI face's caller would get a chunk for."""

    def __init__(self) -> None:
        self.events: list[ProviderEvent] = []

    async def on_event(self, event: ProviderEvent) -> None:
        self.events.append(event)

    async def on_finish(self, outcome: Any) -> None:
        return None


def cut(text: str, points: list[int]) -> list[str]:
    edges = sorted({0, len(text), *(p % (len(text) + 1) for p in points)})
    return [text[a:b] for a, b in itertools.pairwise(edges)]


async def relayed(script: list[Any]) -> tuple[Fragments, Recorder, Any]:
    fragments, sink = Fragments(), Recorder()
    the_job = job(apiKey=KEY)
    relay = Relay(the_job, Scripted(script), [sink], settings=Settings(), observers=[fragments])
    return fragments, sink, await relay.run()


def streamed_arguments(fragments: Fragments, index: int) -> str:
    calls = [e for e in fragments.events if isinstance(e, ToolCallDelta) and e.index == index]
    return "".join(call.arguments for call in calls)


@settings(max_examples=60, deadline=None)
@given(points=st.lists(st.integers(0, 120), max_size=10), other=st.integers(0, 120))
async def test_a_key_in_streamed_arguments_is_replaced_however_it_is_cut(
    points: list[int], other: int
) -> None:
    arguments = json.dumps({"note": f"the key is {KEY}, keep it", "n": 1})
    pieces = cut(arguments, points)
    script: list[Any] = [ToolCallDelta(0, id="call_a", name="save")]
    script += [ToolCallDelta(0, arguments=piece) for piece in pieces]
    # A second call, its fragments between the first's, and text after them.
    split = other % (len(script) + 1)
    script[split:split] = [ToolCallDelta(1, id="call_b", name="other", arguments='{"x": 1}')]
    script += [TextDelta("done"), Finish("tool_calls")]
    fragments, sink, outcome = await relayed(script)
    streamed = streamed_arguments(fragments, 0)
    # At most a few first characters of it, as in text; the rest replaced, nothing lost.
    before, after = arguments.split(KEY)
    kept = re.fullmatch(f"{re.escape(before)}([A-Z0-9]*){re.escape(REDACTED + after)}", streamed)
    assert kept is not None, streamed
    assert len(kept[1]) < HOLD_FROM and KEY.startswith(kept[1])
    assert streamed_arguments(fragments, 1) == '{"x": 1}'
    assert [call.arguments for call in outcome.tool_calls] == [streamed, '{"x": 1}']
    function_call = next(e for e in sink.envelopes if e["type"] == "function_call")
    assert KEY not in json.dumps(function_call) and KEY not in json.dumps(sink.envelopes)
    assert sink.text() == "done"


async def test_a_key_at_the_end_of_a_calls_arguments_is_replaced_at_the_streams_end() -> None:
    script: list[Any] = [ToolCallDelta(0, id="call_a", name="save", arguments='{"k": "')]
    script += [ToolCallDelta(0, arguments=KEY[:10]), ToolCallDelta(0, arguments=KEY[10:])]
    fragments, _, outcome = await relayed(script)  # no finish: the stream ends early
    assert streamed_arguments(fragments, 0) == '{"k": "' + REDACTED
    assert outcome.tool_calls[0].arguments == '{"k": "' + REDACTED


async def test_calls_without_a_secret_stream_as_they_came() -> None:
    pieces = ['{"a"', ': "x', 'yz"}']
    script: list[Any] = [ToolCallDelta(0, id="call_a", name="save")]
    script += [ToolCallDelta(0, arguments=p) for p in pieces]
    fragments, _, _ = await relayed([*script, Finish("tool_calls")])
    calls = [e for e in fragments.events if isinstance(e, ToolCallDelta)]
    assert calls == script


async def test_the_calls_the_tool_loop_runs_carry_no_secret() -> None:
    arguments = json.dumps({"sku": f"A1 {KEY}", "escaped": json.dumps(KEY)})
    asked = [
        ToolCallDelta(0, id="call_1", name="lookup_stock"),
        *(ToolCallDelta(0, arguments=piece) for piece in cut(arguments, [5, 17, 30])),
        Finish("tool_calls"),
    ]
    provider = RoundsProvider([asked, ANSWER_ROUND])
    runner = Runner()
    request = LlmRequest(
        model="m",
        messages=[{"role": "user", "content": "Stock?"}],
        tools=OFFERED,
        api_key=SecretStr(KEY),
    )
    events = await collect(ToolLoop(provider, runner, max_rounds=8), request)  # type: ignore[arg-type]
    ready = next(e for e in events if isinstance(e, ToolCallsReady))
    assert ready.calls[0].arguments == {"sku": f"A1 {REDACTED}", "escaped": f'"{REDACTED}"'}
    assert [call.arguments for call in runner.ran] == [ready.calls[0].arguments]
    # The next round's request (and so a thread's stored round) holds it replaced too.
    assert KEY not in json.dumps(provider.requests[1].messages)


async def test_a_new_call_at_a_reused_index_gets_none_of_the_last_calls_held_end() -> None:
    """Some compatible servers stream each call whole at index 0, each under a new id: the
    first call's held end (an opening of the key) is its own, not the next call's."""
    script: list[Any] = [
        ToolCallDelta(0, id="call_a", name="save", arguments='{"k": "' + KEY[:6]),
        ToolCallDelta(0, id="call_b", name="other", arguments="{}"),
        Finish("tool_calls"),
    ]
    fragments, _, outcome = await relayed(script)
    assert [(call.id, call.arguments) for call in outcome.tool_calls] == [
        ("call_a", '{"k": "' + KEY[:6]),
        ("call_b", "{}"),
    ]
    builder = ChunkBuilder("chatcmpl-x", "m")
    streamed = [builder.for_event(e) for e in fragments.events if isinstance(e, ToolCallDelta)]
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in streamed if c is not None]
    by_index: dict[int, str] = {}
    for call in calls:
        by_index[call["index"]] = by_index.get(call["index"], "") + call["function"]["arguments"]
    assert by_index == {0: '{"k": "' + KEY[:6], 1: "{}"}
