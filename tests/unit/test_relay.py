"""The relay: ordering, coalescing, tool calls, usage, failures and stop, with no network."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streaming_proxy.config import Settings
from streaming_proxy.contract import Payload
from streaming_proxy.errors import UpstreamError
from streaming_proxy.events import (
    Finish,
    ProviderEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)
from streaming_proxy.gate import CallerGate
from streaming_proxy.jobs import StreamJob
from streaming_proxy.openai_format import ChunkBuilder, completion
from streaming_proxy.outcome import missing_call_id
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.mock import MockProvider
from streaming_proxy.relay import Relay
from streaming_proxy.streams import new_stream_id


class Recorder:
    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []
        self.closed = False

    async def start(self) -> None:
        return None

    async def send(self, envelope: dict[str, Any]) -> None:
        self.envelopes.append(envelope)

    async def close(self) -> None:
        self.closed = True

    def types(self) -> list[str]:
        return [e["type"] for e in self.envelopes]

    def text(self) -> str:
        return "".join(e["content"] for e in self.envelopes if e["type"] == "delta")


class Scripted:
    """A provider that yields a script of events with delays; records whether it was closed."""

    name = "scripted"

    def __init__(self, script: list[ProviderEvent | float | Exception]) -> None:
        self.script = script
        self.closed = False

    def prepare(self, request: LlmRequest) -> None:
        return None

    async def stream(self, request: LlmRequest) -> AsyncIterator[ProviderEvent]:
        try:
            for step in self.script:
                if isinstance(step, float):
                    await asyncio.sleep(step)
                elif isinstance(step, Exception):
                    raise step
                else:
                    yield step
        finally:
            self.closed = True


def job(kind: str = "llm", flush_ms: int = 0, **payload: Any) -> StreamJob:
    body = {"provider": "mock", "messages": [{"role": "user", "content": "hello world"}], **payload}
    return StreamJob(
        stream_id="st_test",
        app_id="app1",
        kind=kind,  # type: ignore[arg-type]
        action_name="onLlm",
        channels=[],
        payload=Payload.model_validate(body),
        flush_interval_ms=flush_ms,
    )


async def run(provider: Any, the_job: StreamJob, **settings: Any) -> tuple[Recorder, Any]:
    sink = Recorder()
    relay = Relay(the_job, provider, [sink], settings=Settings(**settings))
    outcome = await relay.run()
    return sink, outcome


async def test_llm_stream_is_numbered_and_complete() -> None:
    text = "The quick brown fox jumps over the lazy dog."
    sink, outcome = await run(MockProvider(), job(providerArgs={"text": text, "delayMs": 0}))
    assert sink.types()[0] == "threadInfo"
    assert sink.envelopes[0]["content"] == {"streamId": "st_test"}
    assert sink.types()[-1] == "end"
    assert [e["seq"] for e in sink.envelopes] == list(range(len(sink.envelopes)))
    assert sink.text() == text == outcome.text
    end = sink.envelopes[-1]
    assert end["finish_reason"] == "stop"
    assert end["usage"]["estimated"] is False
    assert (
        end["usage"]["total_tokens"]
        == end["usage"]["prompt_tokens"] + end["usage"]["completion_tokens"]
    )
    assert all(e["actionName"] == "onLlm" and e["streamId"] == "st_test" for e in sink.envelopes)
    assert sink.closed


async def test_chat_stream_has_no_thread_info() -> None:
    sink, _ = await run(MockProvider(), job(kind="chat", providerArgs={"delayMs": 0}))
    assert sink.types()[0] == "delta"
    assert sink.envelopes[0]["seq"] == 0


async def test_every_delta_reaches_the_sinks_as_it_comes_whatever_the_window() -> None:
    # The window is the channels' (the publisher coalesces its own copy): the SSE caller
    # and every other sink get each piece at once, one seq each.
    words = [f"w{i} " for i in range(40)]
    script: list[Any] = []
    for word in words:
        script += [TextDelta(word), 0.002]
    script.append(Finish("stop"))
    sink, outcome = await run(Scripted(script), job(flush_ms=50))
    deltas = [e for e in sink.envelopes if e["type"] == "delta"]
    assert [d["content"] for d in deltas] == words
    assert sink.text() == "".join(words) == outcome.text


async def test_thinking_is_its_own_event_and_not_in_the_text() -> None:
    script: list[Any] = [ThinkingDelta("let me think"), TextDelta("Answer"), Finish("stop")]
    sink, outcome = await run(Scripted(script), job())
    assert [e["type"] for e in sink.envelopes][1:3] == ["thinking", "delta"]
    assert outcome.text == "Answer" and outcome.thinking == "let me think"


async def test_tool_call_fragments_are_assembled_into_function_call() -> None:
    script: list[Any] = [
        ToolCallDelta(0, id="call_1", name="lookup"),
        ToolCallDelta(0, arguments='{"q": "x", '),
        ToolCallDelta(0, arguments='"userMessage": "Looking it up"}'),
        ToolCallDelta(1, id="call_2", name="other", arguments="{}"),
        Finish("tool_calls"),
        Usage(10, 5),
    ]
    sink, outcome = await run(Scripted(script), job())
    call = next(e for e in sink.envelopes if e["type"] == "function_call")
    assert call["content"] == {
        "functions": [
            {
                "name": "lookup",
                "userMessage": "Looking it up",
                "arguments": {"q": "x", "userMessage": "Looking it up"},
                "toolCallId": "call_1",
            },
            {"name": "other", "userMessage": None, "arguments": {}, "toolCallId": "call_2"},
        ]
    }
    assert outcome.tool_calls[0].arguments == '{"q": "x", "userMessage": "Looking it up"}'
    assert sink.envelopes[-1]["finish_reason"] == "tool_calls"
    assert sink.envelopes[-1]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "estimated": False,
    }


async def test_a_call_the_provider_named_no_id_for_ends_the_stream_with_one() -> None:
    # Before: `function_call` and the outcome carried `toolCallId: ""` for such a call (some
    # compatible servers send none), so the backend had no id to send the result back with.
    script: list[Any] = [
        ToolCallDelta(0, name="lookup", arguments="{}"),
        ToolCallDelta(1, id="call_given", name="other", arguments="{}"),
        ToolCallDelta(2, name="third", arguments="{}"),
        Finish("tool_calls"),
    ]
    stream_id = new_stream_id()
    sink, outcome = await run(Scripted(script), job().model_copy(update={"stream_id": stream_id}))
    ids = [call.id for call in outcome.tool_calls]
    assert ids == [f"call_{stream_id[-8:]}_0", "call_given", f"call_{stream_id[-8:]}_2"]
    call = next(e for e in sink.envelopes if e["type"] == "function_call")
    assert [f["toolCallId"] for f in call["content"]["functions"]] == ids
    # The ids the `/v1` face makes up for the same stream's chunks and completion.
    completion_id = "chatcmpl-" + stream_id.removeprefix("st_")
    assert [missing_call_id(completion_id, n) for n in (0, 2)] == [ids[0], ids[2]]


async def test_a_call_whose_id_comes_late_keeps_its_first_fragments_id_on_every_face() -> None:
    """The `/v1` face streams a call's id with its first fragment (made up when there is
    none); an id on a later fragment must not rename the call in the outcome, the pages'
    `function_call` or `stream:false`, or the caller's reply would name an unknown call."""
    script: list[Any] = [
        ToolCallDelta(0, name="lookup"),
        ToolCallDelta(0, id="late_id", arguments='{"q": '),
        ToolCallDelta(0, id="other_late", arguments='"x"}'),
        ToolCallDelta(1, id="call_given", name="other"),
        ToolCallDelta(1, arguments="{}"),
        Finish("tool_calls"),
    ]
    stream_id = new_stream_id()
    sink, outcome = await run(Scripted(script), job().model_copy(update={"stream_id": stream_id}))
    builder = ChunkBuilder("chatcmpl-" + stream_id.removeprefix("st_"), "m")
    chunks = [builder.for_event(event) for event in script]
    streamed = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if c is not None]
    streamed_ids = [call["id"] for call in streamed if "id" in call]
    assert streamed_ids == [f"call_{stream_id[-8:]}_0", "call_given"]
    assert [call.id for call in outcome.tool_calls] == streamed_ids
    assert [call.arguments for call in outcome.tool_calls] == ['{"q": "x"}', "{}"]
    call = next(e for e in sink.envelopes if e["type"] == "function_call")
    assert [f["toolCallId"] for f in call["content"]["functions"]] == streamed_ids
    assert [
        f["id"] for f in completion("c", "m", outcome)["choices"][0]["message"]["tool_calls"]
    ] == (streamed_ids)


async def test_missing_usage_is_estimated() -> None:
    sink, _ = await run(MockProvider(), job(providerArgs={"usage": False, "delayMs": 0}))
    usage = sink.envelopes[-1]["usage"]
    assert usage["estimated"] is True
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


async def test_failure_mid_stream_sends_error_then_end() -> None:
    sink, outcome = await run(MockProvider(), job(providerArgs={"failAfter": 2, "delayMs": 0}))
    assert sink.types()[-2:] == ["error", "end"]
    assert sink.envelopes[-1]["finish_reason"] == "error"
    assert "mock failure" in sink.envelopes[-2]["error"]["message"]
    assert outcome.started and outcome.error is not None


async def test_a_failure_before_the_first_byte_is_the_waiting_callers_and_publishes_nothing() -> (
    None
):
    provider = Scripted([0.05, UpstreamError("bad key", upstream_status=401)])
    sink = Recorder()
    gate = CallerGate()
    relay = Relay(job(), provider, [sink], settings=Settings(), gate=gate)
    task = asyncio.create_task(relay.run())
    error = await gate.wait(5)
    outcome = await task
    assert error is not None and error.status == 401 and error is outcome.error
    assert not outcome.started
    assert sink.types() == []  # the browsers never learned of this stream
    assert sink.closed


async def test_a_failure_after_the_caller_was_answered_is_published() -> None:
    provider = Scripted([0.2, UpstreamError("overloaded", upstream_status=529)])
    sink = Recorder()
    gate = CallerGate()
    relay = Relay(job(), provider, [sink], settings=Settings(), gate=gate)
    task = asyncio.create_task(relay.run())
    assert await gate.wait(0.05) is None  # the ack went out: "Streaming setup complete"
    outcome = await task
    assert not outcome.started and outcome.error is not None
    assert sink.types() == ["threadInfo", "error", "end"]
    assert [e["seq"] for e in sink.envelopes] == [0, 1, 2]


async def test_a_stream_read_by_its_caller_publishes_no_early_failure() -> None:
    sink = Recorder()
    relay = Relay(job(), Scripted([UpstreamError("nope")]), [sink], settings=Settings())
    outcome = await relay.run()
    assert outcome.error is not None and sink.types() == []


async def test_idle_timeout_ends_the_stream_and_closes_upstream() -> None:
    provider = Scripted([TextDelta("a"), 5.0, TextDelta("never")])
    sink, outcome = await run(provider, job(), idle_timeout_seconds=0.2)
    assert outcome.error is not None and outcome.error.status == 504
    assert sink.types()[-2:] == ["error", "end"]
    assert provider.closed


async def test_cancel_stops_upstream_and_ends_cancelled() -> None:
    provider = Scripted([TextDelta("a"), 0.05] * 100 + [Finish("stop")])
    sink = Recorder()
    relay = Relay(job(), provider, [sink], settings=Settings())
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.2)
    relay.cancel()
    outcome = await asyncio.wait_for(task, 2)
    assert outcome.finish_reason == "cancelled"
    assert sink.envelopes[-1]["finish_reason"] == "cancelled"
    assert provider.closed


async def test_huge_delta_is_split_under_the_websocket_limit() -> None:
    big = "é" * 200_000
    sink, _ = await run(Scripted([TextDelta(big), Finish("stop")]), job())
    deltas = [e for e in sink.envelopes if e["type"] == "delta"]
    assert len(deltas) > 1
    assert "".join(d["content"] for d in deltas) == big
    assert all(len(d["content"].encode()) <= 96 * 1024 for d in deltas)


@pytest.mark.parametrize("flush_ms", [0, 40])
async def test_seq_is_contiguous_whatever_the_window(flush_ms: int) -> None:
    sink, _ = await run(MockProvider(), job(flush_ms=flush_ms, providerArgs={"delayMs": 1}))
    assert [e["seq"] for e in sink.envelopes] == list(range(len(sink.envelopes)))


class BrokenStart(Recorder):
    async def start(self) -> None:
        raise RuntimeError("table unreachable")


async def test_a_sink_that_cannot_start_fails_the_stream_cleanly() -> None:
    provider = Scripted([TextDelta("never seen"), Finish("stop")])
    witness = Recorder()
    gate = CallerGate()
    relay = Relay(job(), provider, [BrokenStart(), witness], settings=Settings(), gate=gate)
    task = asyncio.create_task(relay.run())
    error = await gate.wait(5)
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.error is not None and outcome.finish_reason == "error"
    assert error is outcome.error and error.status == 503
    assert witness.types() == []
    assert witness.closed


# --- a stream always finishes, whatever raises (issue: one lone surrogate hung a stream) ----


async def test_a_lone_surrogate_from_the_model_is_replaced_and_the_stream_ends() -> None:
    bad = "broken \ud800 text"
    script: list[Any] = [TextDelta("ok "), TextDelta("x" * 200_000 + bad), Finish("stop")]
    sink, outcome = await asyncio.wait_for(run(Scripted(script), job()), 5)
    assert outcome.error is None and sink.types()[-1] == "end"
    assert "\ud800" not in sink.text() and sink.text().endswith("broken \ufffd text")
    for envelope in sink.envelopes:  # every message encodes as UTF-8
        json.dumps(envelope, ensure_ascii=False).encode("utf-8")
    assert sink.closed


async def test_lone_surrogates_in_thinking_and_tool_calls_are_replaced_too() -> None:
    script: list[Any] = [
        ThinkingDelta("hm \udfff"),
        ToolCallDelta(0, id="call_\ud801", name="f\ud802", arguments='{"a": "\udc00"}'),
        Finish("tool_calls"),
    ]
    sink, outcome = await asyncio.wait_for(run(Scripted(script), job()), 5)
    assert outcome.thinking == "hm \ufffd"
    assert outcome.tool_calls[0].name == "f\ufffd"
    assert sink.types()[-2:] == ["function_call", "end"]


class Exploding(Recorder):
    """A sink whose every send raises, and whose close raises too."""

    async def send(self, envelope: dict[str, Any]) -> None:
        raise RuntimeError("sink broke")

    async def close(self) -> None:
        raise RuntimeError("close broke")


class BadObserver:
    async def on_event(self, event: ProviderEvent) -> None:
        raise RuntimeError("observer broke")

    async def on_finish(self, outcome: Any) -> None:
        raise RuntimeError("observer broke at the end")


async def test_a_failing_sink_or_observer_never_stops_the_other_sinks_or_the_end() -> None:
    witness = Recorder()
    relay = Relay(
        job(providerArgs={"delayMs": 0, "text": "one two three"}),
        MockProvider(),
        [Exploding(), witness],
        settings=Settings(),
        observers=[BadObserver()],
    )
    outcome = await asyncio.wait_for(relay.run(), 5)
    assert outcome.error is None
    assert witness.text() == "one two three" and witness.types()[-1] == "end"
    assert witness.closed


async def test_a_relay_bug_still_ends_the_stream_with_error_and_end() -> None:
    sink = Recorder()
    relay = Relay(job(), Scripted([TextDelta("a"), Finish("stop")]), [sink], settings=Settings())

    async def broken(event: ProviderEvent) -> None:
        raise ZeroDivisionError("relay bug")

    relay._handle = broken  # type: ignore[method-assign]
    gate_answered = CallerGate()
    relay.gate = gate_answered
    await gate_answered.wait(0)  # the caller was answered: the failure is published
    outcome = await asyncio.wait_for(relay.run(), 5)
    assert outcome.error is not None and outcome.error.status == 500
    assert sink.types() == ["threadInfo", "error", "end"]
    assert "relay bug" not in json.dumps(sink.envelopes)  # no internals leak


async def test_a_bug_while_summing_up_the_stream_still_ends_it_and_closes_every_sink(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: Any, request: Any) -> dict[str, Any]:
        raise ZeroDivisionError("summing bug")

    monkeypatch.setattr("streaming_proxy.turn.TurnState.reported_usage", broken)
    sink, outcome = await asyncio.wait_for(
        run(Scripted([TextDelta("a"), Finish("stop")]), job()), 5
    )
    assert outcome.error is not None and outcome.finish_reason == "error"
    assert sink.types()[-2:] == ["error", "end"] and sink.closed
    end = sink.envelopes[-1]
    assert end["finish_reason"] == "error" and end["usage"]["estimated"] is True


class SlowStart(Recorder):
    """Membership that takes longer to read than the idle timeout."""

    async def start(self) -> None:
        await asyncio.sleep(0.6)


async def test_a_slow_membership_read_never_turns_a_complete_answer_into_a_timeout() -> None:
    # The whole answer arrives while the sinks start; the idle limit is shorter than that.
    script: list[Any] = [TextDelta("all "), TextDelta("of it"), Finish("stop")]
    sink = SlowStart()
    relay = Relay(job(), Scripted(script), [sink], settings=Settings(idle_timeout_seconds=0.3))
    outcome = await asyncio.wait_for(relay.run(), 5)
    assert outcome.error is None, outcome.error
    assert sink.text() == "all of it" and sink.envelopes[-1]["finish_reason"] == "stop"


async def test_the_idle_limit_counts_from_the_upstream_request_not_from_the_sinks() -> None:
    # The provider is silent; the sinks take longer than the idle limit to start: the
    # stream times out once, counted from the request, and still ends cleanly.
    sink = SlowStart()
    relay = Relay(job(), Scripted([30.0]), [sink], settings=Settings(idle_timeout_seconds=0.3))
    started = asyncio.get_running_loop().time()
    outcome = await asyncio.wait_for(relay.run(), 5)
    assert outcome.error is not None and outcome.error.status == 504
    assert asyncio.get_running_loop().time() - started < 1.5


async def test_a_deadline_never_fires_while_events_wait_in_the_queue() -> None:
    # A burst of events queued at once, the idle limit shorter than it takes to handle them.
    script: list[Any] = [TextDelta(f"{i} ") for i in range(500)] + [Finish("stop")]
    sink, outcome = await run(Scripted(script), job(flush_ms=1), idle_timeout_seconds=0.05)
    assert outcome.error is None
    assert sink.text() == "".join(f"{i} " for i in range(500))
