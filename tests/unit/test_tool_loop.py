"""The tool loop: rounds of model turns and tool runs as one event stream, and the relay's
messages for it (function_call as soon as asked, llmToolCall per frontend call, seq
contiguous across rounds, usage summed, idle limit paused while tools run)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from streaming_proxy.config import Settings, ToolWebhook
from streaming_proxy.contract import Payload
from streaming_proxy.events import (
    Finish,
    PlannedCall,
    ProviderEvent,
    RoundStarted,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    ToolCallsReady,
    Usage,
    is_frontend,
)
from streaming_proxy.jobs import StreamJob
from streaming_proxy.outcome import ToolCall
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.bedrock import BedrockProvider
from streaming_proxy.relay import Relay
from streaming_proxy.tools.frontend import FrontendTools, LocalAnswers
from streaming_proxy.tools.loop import ToolLoop, ToolRunner, plan
from streaming_proxy.tools.webhook import ToolWebhooks
from tests.fake_bedrock import FakeBedrock


class RoundsProvider:
    """A model whose answers are scripted per round; records every request it got."""

    name = "rounds"

    def __init__(self, rounds: list[list[ProviderEvent | float]]) -> None:
        self.rounds = rounds
        self.requests: list[LlmRequest] = []

    def prepare(self, request: LlmRequest) -> None:
        return None

    async def stream(self, request: LlmRequest) -> AsyncIterator[ProviderEvent]:
        self.requests.append(request)
        script = self.rounds[min(len(self.requests), len(self.rounds)) - 1]
        for step in script:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                yield step


class Runner:
    """Answers every call after `delay`, recording calls and how many ran at once."""

    def __init__(self, *, webhook: bool = True, delay: float = 0.0) -> None:
        self.webhook = webhook
        self.delay = delay
        self.opened: list[str] = []
        self.ran: list[PlannedCall] = []
        self.closed: list[str] = []
        self.running = 0
        self.most_at_once = 0

    def can_run(self, calls: list[PlannedCall]) -> bool:
        return all(call.frontend or self.webhook for call in calls)

    async def open(self, calls: list[PlannedCall]) -> None:
        self.opened += [c.id for c in calls if c.frontend]

    async def run(self, call: PlannedCall) -> dict[str, Any]:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await asyncio.sleep(self.delay)
        self.running -= 1
        self.ran.append(call)
        return {"success": True, "message": f"{call.name} done"}

    async def close(self, calls: list[PlannedCall]) -> None:
        self.closed += [c.id for c in calls if c.frontend]


def ask(index: int, call_id: str, name: str, arguments: str) -> list[ProviderEvent]:
    return [
        ToolCallDelta(index, id=call_id, name=name),
        ToolCallDelta(index, arguments=arguments[:4]),
        ToolCallDelta(index, arguments=arguments[4:]),
    ]


COLOUR_ROUND: list[ProviderEvent | float] = [
    ThinkingDelta("The page knows. "),
    ThinkingSignature("sig-1"),
    TextDelta("Let me look. "),
    *ask(0, "call_a", "ui_get_color", '{"userMessage": "Picking", "shade": "warm"}'),
    Usage(100, 20),
    Finish("tool_calls"),
]
ANSWER_ROUND: list[ProviderEvent | float] = [
    TextDelta("It is red."),
    Usage(150, 10),
    Finish("stop"),
]


async def collect(loop: ToolLoop, request: LlmRequest) -> list[StreamEvent]:
    return [event async for event in loop.stream(request)]


# The tools the scripted models call (the loop runs only the tools a request offers).
OFFERED = [
    {"type": "function", "function": {"name": name}}
    for name in ("ui_get_color", "lookup_stock", "search", "get_weather")
]
REQUEST = LlmRequest(
    model="m", messages=[{"role": "user", "content": "Which colour?"}], tools=OFFERED
)


async def test_one_round_runs_the_tool_and_sends_turn_and_result_back() -> None:
    provider = RoundsProvider([COLOUR_ROUND, ANSWER_ROUND])
    runner = Runner()
    events = await collect(ToolLoop(provider, runner, max_rounds=8), REQUEST)  # type: ignore[arg-type]

    ready = next(e for e in events if isinstance(e, ToolCallsReady))
    assert ready.run and len(ready.calls) == 1
    call = ready.calls[0]
    assert call.frontend and call.tool_name == "get_color" and call.model_id == "call_a"
    assert call.id.startswith("tc_") and call.id != "call_a"
    assert call.arguments == {"userMessage": "Picking", "shade": "warm"}
    assert call.user_message() == "Picking"
    kinds = [type(e).__name__ for e in events if not isinstance(e, TextDelta | ThinkingDelta)]
    assert kinds == [
        "ThinkingSignature",
        "Usage",
        "ToolCallsReady",
        "ToolsWaiting",
        "ToolsWaiting",
        "RoundStarted",
        "Usage",
        "Finish",
    ]
    assert events[-1] == Finish("stop")
    assert events[-2] == Usage(250, 30, False)  # summed over the two rounds
    assert runner.opened == runner.closed == [call.id]

    second = provider.requests[1].messages
    assert second[0] == {"role": "user", "content": "Which colour?"}
    assert second[1] == {
        "role": "assistant",
        "content": "Let me look. ",
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {
                    "name": "ui_get_color",
                    "arguments": '{"userMessage": "Picking", "shade": "warm"}',
                },
            }
        ],
        "reasoning_blocks": [
            {"type": "thinking", "thinking": "The page knows. ", "signature": "sig-1"}
        ],
    }
    assert second[2] == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": json.dumps({"success": True, "message": "ui_get_color done"}),
    }


async def test_parallel_calls_of_one_round_run_at_the_same_time() -> None:
    both = [
        *ask(0, "call_a", "ui_get_color", "{}"),
        *ask(1, "call_b", "lookup_stock", '{"sku": "A1"}'),
        Finish("tool_calls"),
    ]
    provider = RoundsProvider([both, ANSWER_ROUND])
    runner = Runner(delay=0.05)
    await collect(ToolLoop(provider, runner, max_rounds=8), REQUEST)  # type: ignore[arg-type]
    assert runner.most_at_once == 2
    results = [m for m in provider.requests[1].messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in results] == ["call_a", "call_b"]  # in the model's order


async def test_past_the_round_limit_the_calls_end_the_stream_unrun() -> None:
    provider = RoundsProvider([COLOUR_ROUND])  # asks for the tool every time
    runner = Runner()
    events = await collect(ToolLoop(provider, runner, max_rounds=2), REQUEST)  # type: ignore[arg-type]
    readies = [e for e in events if isinstance(e, ToolCallsReady)]
    assert [r.run for r in readies] == [True, True, False]
    assert len(provider.requests) == 3 and len(runner.ran) == 2
    assert events[-1] == Finish("tool_calls")
    assert [e.number for e in events if isinstance(e, RoundStarted)] == [2, 3]


async def test_a_backend_tool_without_a_webhook_ends_the_stream_with_its_call() -> None:
    backend = [*ask(0, "call_x", "lookup_stock", '{"sku": "A1"}'), Finish("tool_calls")]
    provider = RoundsProvider([backend])
    runner = Runner(webhook=False)
    events = await collect(ToolLoop(provider, runner, max_rounds=8), REQUEST)  # type: ignore[arg-type]
    ready = next(e for e in events if isinstance(e, ToolCallsReady))
    assert not ready.run and runner.ran == [] and runner.opened == []
    assert events[-1] == Finish("tool_calls") and len(provider.requests) == 1


async def test_arguments_that_are_not_an_object_go_back_as_an_empty_object() -> None:
    bad = [*ask(0, "call_a", "ui_get_color", "not json at all"), Finish("tool_calls")]
    provider = RoundsProvider([bad, ANSWER_ROUND])
    events = await collect(ToolLoop(provider, Runner(), max_rounds=8), REQUEST)  # type: ignore[arg-type]
    ready = next(e for e in events if isinstance(e, ToolCallsReady))
    assert ready.calls[0].arguments == "not json at all"  # announced as the model sent them
    turn = provider.requests[1].messages[1]
    assert turn["tool_calls"][0]["function"]["arguments"] == "{}"  # providers need an object


async def test_the_runner_refuses_to_run_a_call_whose_arguments_are_not_an_object() -> None:
    runner = ToolRunner(job(), None, None, None, timeout_seconds=1)  # type: ignore[arg-type]
    call = PlannedCall("tc_1", "call_a", "ui_get_color", "not json", frontend=True)
    result = await runner.run(call)
    assert result == {
        "success": False,
        "message": "the arguments were not a JSON object; the tool did not run",
    }


async def test_a_round_without_usage_is_estimated_and_said_so() -> None:
    silent = [*ask(0, "call_a", "ui_get_color", "{}"), Finish("tool_calls")]
    provider = RoundsProvider([silent, ANSWER_ROUND])
    events = await collect(ToolLoop(provider, Runner(), max_rounds=8), REQUEST)  # type: ignore[arg-type]
    final = [e for e in events if isinstance(e, Usage)][-1]
    assert final.estimated and final.prompt_tokens is not None and final.prompt_tokens > 150


class ObedientProvider(RoundsProvider):
    """A model that calls the tool in its first turn, and later only while tool_choice
    forces a call (as models do); it answers otherwise."""

    def __init__(self) -> None:
        super().__init__([])

    async def stream(self, request: LlmRequest) -> AsyncIterator[ProviderEvent]:
        self.requests.append(request)
        forced = request.tool_choice not in (None, "auto", "none")
        for step in COLOUR_ROUND if forced or len(self.requests) == 1 else ANSWER_ROUND:
            assert not isinstance(step, float)
            yield step


NAMED = {"type": "function", "function": {"name": "ui_get_color"}}


@pytest.mark.parametrize(
    ("choice", "later"),
    [("required", None), (NAMED, None), ("auto", "auto")],
    ids=["required", "named", "auto"],
)
async def test_a_forcing_tool_choice_holds_for_the_first_round_only(
    choice: str | dict[str, Any], later: str | None
) -> None:
    provider = ObedientProvider()
    request = LlmRequest(model="m", messages=REQUEST.messages, tools=OFFERED, tool_choice=choice)
    events = await collect(ToolLoop(provider, Runner(), max_rounds=8), request)  # type: ignore[arg-type]
    assert [r.tool_choice for r in provider.requests] == [choice, later]
    assert events[-1] == Finish("stop")
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Let me look. It is red."


async def test_the_provider_stream_is_closed_as_soon_as_the_loop_is() -> None:
    closed: list[bool] = []

    class Tracked(RoundsProvider):
        async def stream(self, request: LlmRequest) -> AsyncIterator[ProviderEvent]:
            try:
                async for event in super().stream(request):
                    yield event
            finally:
                closed.append(True)

    events = ToolLoop(Tracked([COLOUR_ROUND]), Runner(), max_rounds=8).stream(REQUEST)  # type: ignore[arg-type]
    assert isinstance(await anext(events), ThinkingDelta)
    await events.aclose()  # type: ignore[attr-defined]
    assert closed == [True]  # at once, not whenever the garbage collector gets to it


def test_one_prefix_makes_a_tool_frontend_for_the_loop_the_pages_and_the_request() -> None:
    names = ["ui_get_color", "lookup_stock", "ui_", "get_ui_thing", "UI_shout"]
    frontend = [name for name in names if is_frontend(name)]
    assert frontend == ["ui_get_color", "ui_"]
    calls = plan([ToolCall(f"call_{n}", name, "{}") for n, name in enumerate(names)])
    assert [c.name for c in calls if c.frontend] == frontend
    assert [c.tool_name for c in calls if c.frontend] == ["get_color", ""]
    payload = Payload.model_validate(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": name}} for name in names],
        }
    )
    requested = StreamJob(
        stream_id="s", app_id="a", kind="llm", action_name="x", payload=payload, flush_interval_ms=0
    )
    assert requested.frontend_tools == frontend


# --- the relay around the loop ----------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []

    async def start(self) -> None:
        return None

    async def send(self, envelope: dict[str, Any]) -> None:
        self.envelopes.append(envelope)

    async def close(self) -> None:
        return None


def job(**options: Any) -> StreamJob:
    payload = {
        "provider": "mock",
        "messages": [{"role": "user", "content": "Which colour?"}],
        "tools": OFFERED,
    }
    return StreamJob(
        stream_id="st_loop",
        app_id="app1",
        kind="llm",
        action_name="onLlm",
        channels=["room"],
        payload=Payload.model_validate(payload),
        flush_interval_ms=0,
        **options,
    )


async def test_the_relay_publishes_the_calls_when_asked_and_one_stream_across_rounds() -> None:
    provider = RoundsProvider([COLOUR_ROUND, ANSWER_ROUND])
    sink = Recorder()
    loop = ToolLoop(provider, Runner(), max_rounds=8)  # type: ignore[arg-type]
    outcome = await Relay(job(), loop, [sink], settings=Settings()).run()
    types = [e["type"] for e in sink.envelopes]
    assert types == [
        "threadInfo",
        "thinking",
        "delta",
        "function_call",
        "llmToolCall",
        "delta",
        "end",
    ]
    assert [e["seq"] for e in sink.envelopes] == list(range(len(types)))
    call = sink.envelopes[4]
    assert call["action"] == call["type"] == "llmToolCall"
    assert call["toolName"] == "get_color" and call["arguments"]["shade"] == "warm"
    assert call["functions"] == [{"name": "get_color", "arguments": call["arguments"]}]
    functions = sink.envelopes[3]["content"]["functions"]
    assert functions == [
        {
            "name": "ui_get_color",
            "userMessage": "Picking",
            "arguments": {"userMessage": "Picking", "shade": "warm"},
            "toolCallId": call["toolCallId"],
        }
    ]
    end = sink.envelopes[-1]
    assert end["finish_reason"] == "stop"
    assert end["usage"] == {
        "prompt_tokens": 250,
        "completion_tokens": 30,
        "total_tokens": 280,
        "estimated": False,
    }
    assert outcome.text == "Let me look. It is red." and outcome.tool_calls == []


async def test_the_idle_limit_does_not_run_while_tools_run() -> None:
    provider = RoundsProvider([COLOUR_ROUND, ANSWER_ROUND])
    sink = Recorder()
    loop = ToolLoop(provider, Runner(delay=0.6), max_rounds=8)  # type: ignore[arg-type]
    settings = Settings(idle_timeout_seconds=0.2)
    outcome = await Relay(job(), loop, [sink], settings=settings).run()
    assert outcome.error is None and sink.envelopes[-1]["finish_reason"] == "stop"


async def test_calls_left_for_the_backend_are_the_outcome_and_function_call_once() -> None:
    backend = [*ask(0, "call_x", "lookup_stock", '{"sku": "A1"}'), Finish("tool_calls")]
    sink = Recorder()
    loop = ToolLoop(RoundsProvider([backend]), Runner(webhook=False), max_rounds=8)  # type: ignore[arg-type]
    outcome = await Relay(job(), loop, [sink], settings=Settings()).run()
    assert [e["type"] for e in sink.envelopes] == ["threadInfo", "function_call", "end"]
    assert sink.envelopes[-1]["finish_reason"] == "tool_calls"
    [left] = outcome.tool_calls
    entry = sink.envelopes[1]["content"]["functions"][0]
    assert (left.id, left.name, json.loads(left.arguments)) == (
        entry["toolCallId"],
        "lookup_stock",
        {"sku": "A1"},
    )


async def test_a_stop_while_waiting_for_a_browser_ends_the_stream_at_once() -> None:
    provider = RoundsProvider([COLOUR_ROUND, ANSWER_ROUND])
    runner = Runner(delay=30)
    sink = Recorder()
    relay = Relay(job(), ToolLoop(provider, runner, max_rounds=8), [sink], settings=Settings())  # type: ignore[arg-type]
    task = asyncio.create_task(relay.run())
    while not any(e["type"] == "llmToolCall" for e in sink.envelopes):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    relay.cancel()
    outcome = await asyncio.wait_for(task, 2)
    assert outcome.finish_reason == "cancelled" and sink.envelopes[-1]["type"] == "end"
    assert runner.closed == runner.opened  # the call no longer takes answers


async def test_no_rounds_allowed_means_the_calls_are_only_announced() -> None:
    sink = Recorder()
    loop = ToolLoop(RoundsProvider([COLOUR_ROUND]), Runner(), max_rounds=0)  # type: ignore[arg-type]
    outcome = await Relay(job(), loop, [sink], settings=Settings()).run()
    assert "llmToolCall" not in [e["type"] for e in sink.envelopes]
    assert outcome.finish_reason == "tool_calls" and len(outcome.tool_calls) == 1


async def test_the_loop_on_bedrock_sends_the_turn_and_the_result_in_converse_format() -> None:
    fake = FakeBedrock()  # checks round 2's toolUse/toolResult and the signed reasoning block
    provider = BedrockProvider(Settings(bedrock_region="us-east-1"), client_factory=fake.factory)
    request = LlmRequest(
        model="fake-tool-loop",
        messages=[{"role": "user", "content": "Pick me a colour."}],
        tools=[{"type": "function", "function": {"name": "ui_get_color"}}],
    )
    events = await collect(ToolLoop(provider, Runner(), max_rounds=8), request)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Let me look. The colour is ui_get_color done."
    assert len(fake.calls) == 2 and events[-1] == Finish("stop")
    assert [e for e in events if isinstance(e, Usage)][-1] == Usage(55, 18, False)


# --- arguments as models write them ------------------------------------------------------------


def backend_runner(seen: list[bytes]) -> ToolRunner:
    """A real runner whose backend tools go to a webhook that records each body."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, json={"success": True, "message": "found"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    hook = ToolWebhook(url="https://tools.example.com/run", secret=SecretStr("s" * 32))
    no_browsers = FrontendTools(None, None, LocalAnswers())  # type: ignore[arg-type]
    webhooks = ToolWebhooks(http, timeout_seconds=5, max_bytes=1024)
    return ToolRunner(job(), no_browsers, webhooks, hook, timeout_seconds=5)


async def test_an_escaped_lone_surrogate_in_arguments_is_repaired_not_fatal() -> None:
    # Valid JSON text, all ASCII: json.loads makes a lone surrogate of it, which no UTF-8
    # encoder takes (the webhook body, the posts, round 2's request).
    search = [*ask(0, "call_s", "search", '{"q": "\\ud800 x", "\\udfff": 1}'), Finish("tool_calls")]
    provider = RoundsProvider([search, ANSWER_ROUND])
    seen: list[bytes] = []
    sink = Recorder()
    loop = ToolLoop(provider, backend_runner(seen), max_rounds=8)
    outcome = await Relay(job(), loop, [sink], settings=Settings()).run()
    assert outcome.error is None and sink.envelopes[-1]["finish_reason"] == "stop"
    [body] = seen
    assert json.loads(body.decode("utf-8"))["arguments"] == {"q": "\ufffd x", "\ufffd": 1}
    json.dumps(provider.requests[1].messages, ensure_ascii=False).encode("utf-8")
    turn = provider.requests[1].messages[1]
    arguments = turn["tool_calls"][0]["function"]["arguments"]
    json.dumps(json.loads(arguments), ensure_ascii=False).encode("utf-8")  # as adapters send it


async def test_arguments_nested_too_deep_are_not_an_object_and_the_stream_goes_on() -> None:
    for depth in (100, 5000):  # past MAX_JSON_DEPTH; past the parser's own recursion limit
        deep = '{"a": ' * depth + "1" + "}" * depth
        provider = RoundsProvider(
            [[*ask(0, "call_d", "search", deep), Finish("tool_calls")], ANSWER_ROUND]
        )
        seen: list[bytes] = []
        sink = Recorder()
        loop = ToolLoop(provider, backend_runner(seen), max_rounds=8)
        outcome = await Relay(job(), loop, [sink], settings=Settings()).run()
        assert outcome.error is None and sink.envelopes[-1]["finish_reason"] == "stop"
        assert seen == []  # the tool did not run
        result = json.loads(provider.requests[1].messages[2]["content"])
        assert "not a JSON object" in result["message"]
        assert provider.requests[1].messages[1]["tool_calls"][0]["function"]["arguments"] == "{}"
