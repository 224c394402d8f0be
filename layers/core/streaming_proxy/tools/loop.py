"""ToolLoop: rounds of model turns and tool runs, seen by the relay as one event stream.

When the model's turn ends with tool calls, the loop announces them (`ToolCallsReady`),
runs them (frontend `ui_` calls wait for a browser, the others go to the app's webhook),
appends the model's turn and the results to the conversation in OpenAI's format (each
adapter translates it to its provider's), and calls the provider again. The stream's
`seq` runs on across rounds; usage is summed over them; the last round's finish reason is
the stream's. Calls nobody can run (a backend tool with no webhook), or calls past
`max_rounds` rounds, end the stream with `finish_reason: tool_calls` instead.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from .. import redact
from ..config import ToolWebhook
from ..events import (
    Finish,
    PlannedCall,
    RoundStarted,
    StreamEvent,
    ToolCallDelta,
    ToolCallsReady,
    ToolsWaiting,
    Usage,
    is_frontend,
)
from ..jobs import StreamJob
from ..observability import get_logger
from ..outcome import ToolCall
from ..providers.base import LlmRequest, Provider
from ..providers.translate import function_tools
from ..textcheck import model_json
from ..textguard import without_secrets
from ..turn import TurnState
from .frontend import FrontendTools
from .messages import reaches_pages
from .webhook import ToolWebhooks, failure


def new_call_id() -> str:
    """The proxy's id of a call: unguessable, unique across streams and apps."""
    return "tc_" + secrets.token_urlsafe(12)


def plan(calls: list[ToolCall], taken: set[str] | None = None) -> list[PlannedCall]:
    """The model's calls as the proxy runs them: own ids, parsed arguments, frontend or not.
    A model id that is missing, or already in `taken` (the conversation's call ids, which
    this adds to), is replaced: a result answers its call by id, and Anthropic and Bedrock
    refuse a repeated one, Gemini gives both results the later call's name."""
    taken = set() if taken is None else taken
    planned = []
    for call in calls:
        model_id = call.id if call.id and call.id not in taken else new_call_id()
        taken.add(model_id)
        try:
            arguments: dict[str, Any] | str = model_json(call.arguments or "{}")
        except ValueError:
            arguments = call.arguments
        if not isinstance(arguments, dict):
            arguments = call.arguments
        proxied = PlannedCall(
            id=new_call_id(),
            model_id=model_id,
            name=call.name,
            arguments=arguments,
            frontend=is_frontend(call.name),
        )
        if proxied.frontend and not reaches_pages(proxied):
            proxied = replace(proxied, too_large=True)
        planned.append(proxied)
    return planned


class ToolRunner:
    """Runs one stream's tool calls: frontend ones wait for a browser, the others go to the
    app's webhook."""

    def __init__(
        self,
        job: StreamJob,
        frontend: FrontendTools,
        webhooks: ToolWebhooks,
        hook: ToolWebhook | None,
        *,
        timeout_seconds: float,
    ) -> None:
        self._job = job
        self._frontend = frontend
        self._webhooks = webhooks
        self._hook = hook
        self._timeout = timeout_seconds
        # Frontend calls opened and still taking answers (no answer, not closed).
        self._open: set[str] = set()

    def can_run(self, calls: list[PlannedCall]) -> bool:
        """Frontend calls need browsers (channels), backend calls a webhook."""
        return all(
            bool(self._job.channels) if call.frontend else self._hook is not None for call in calls
        )

    async def open(self, calls: list[PlannedCall]) -> None:
        """Record the frontend calls a page can be told of (not `too_large`)."""
        frontend = [c for c in calls if c.frontend and not c.too_large]
        await self._frontend.open(self._job, frontend)
        self._open.update(c.id for c in frontend)

    async def run(self, call: PlannedCall) -> dict[str, Any]:
        """The result the model gets for `call` (a failure result when the tool failed),
        without secrets: a webhook or a page may echo one (a debug answer, a page's token
        under any key), and the result goes to the provider and into the thread's history,
        which pages read."""
        result: dict[str, Any] = scrubbed(await self._run(call))
        return result

    async def _run(self, call: PlannedCall) -> dict[str, Any]:
        if not isinstance(call.arguments, dict):
            return failure("the arguments were not a JSON object; the tool did not run")
        if call.frontend:
            if call.too_large:
                get_logger().warning(
                    "frontend tool call too large for a page; failed",
                    extra={"stream_id": self._job.stream_id, "tool_call_id": call.id},
                )
                return failure(
                    "the arguments are too large to hand to a page (one WebSocket message "
                    "holds 128 KB); the tool did not run"
                )
            return await self._run_frontend(call)
        assert self._hook is not None  # can_run said so
        payload = {
            "appId": self._job.app_id,
            "streamId": self._job.stream_id,
            "toolCallId": call.id,
            "name": call.name,
            "arguments": call.arguments,
            "channels": self._job.channels,
            "actionName": self._job.action_name,
        }
        return await self._webhooks.call(self._hook, payload)

    async def close(self, calls: list[PlannedCall]) -> None:
        """Close the frontend calls still taking answers (after a stop: the runs were
        cancelled); answered and timed-out ones need no write."""
        ids = [c.id for c in calls if c.id in self._open]
        self._open.difference_update(ids)
        await self._frontend.close(self._job.app_id, ids)

    async def _run_frontend(self, call: PlannedCall) -> dict[str, Any]:
        app_id = self._job.app_id
        answer = await self._frontend.wait(app_id, call.id, self._timeout)
        if answer is None:
            answer = await self._frontend.settle(app_id, call.id)
        self._open.discard(call.id)
        if answer is None:
            return failure(f"the tool did not answer within {self._timeout:g} seconds")
        return {k: v for k, v in answer.items() if k != "toolCallId"}


def scrubbed(value: Any) -> Any:
    """A JSON value with every known secret and credential-shaped string in it replaced
    (redact.scrub), keys too. Tool results nest at most MAX_JSON_DEPTH deep (both edges
    refuse deeper), so the recursion is bounded."""
    if isinstance(value, str):
        return redact.scrub(value)
    if isinstance(value, list):
        return [scrubbed(item) for item in value]
    if isinstance(value, dict):
        return {redact.scrub(key): scrubbed(item) for key, item in value.items()}
    return value


@dataclass
class _Totals:
    """Usage summed over the rounds (each round's own counts, estimated where missing)."""

    prompt: int = 0
    completion: int = 0
    estimated: bool = False

    def add(self, turn: TurnState, request: LlmRequest) -> Usage:
        usage = turn.reported_usage(request)
        self.prompt += usage["prompt_tokens"]
        self.completion += usage["completion_tokens"]
        self.estimated = self.estimated or usage["estimated"]
        return Usage(self.prompt, self.completion, self.estimated)


class ToolLoop:
    """A provider that runs the tools its model asks for, until an answer without tools."""

    def __init__(
        self,
        provider: Provider,
        runner: ToolRunner,
        *,
        max_rounds: int,
        transcript: list[dict[str, Any]] | None = None,
    ) -> None:
        self.name = provider.name
        self._provider = provider
        self._runner = runner
        self._max_rounds = max_rounds
        # Where each round's assistant turn and tool results go too (a thread stores them).
        self._transcript = transcript

    def prepare(self, request: LlmRequest) -> None:
        self._provider.prepare(request)

    async def stream(self, request: LlmRequest) -> AsyncIterator[StreamEvent]:
        messages = list(request.messages)
        taken = call_ids(messages)
        offered = {tool.name for tool in function_tools(request.tools)}
        totals = _Totals()
        later = replace(request, tool_choice=unforced(request.tool_choice))
        for number in itertools.count(1):
            if number > 1:
                yield RoundStarted(number)
            turn = TurnState()
            this_round = replace(request if number == 1 else later, messages=messages)
            async with aclosing(self._provider.stream(this_round)) as events:
                async for event in events:
                    turn.handle(event)
                    # Usage is summed over rounds, finish and tool calls are decided below.
                    if not isinstance(event, Usage | Finish | ToolCallDelta):
                        yield event
            yield totals.add(turn, this_round)
            said = [_guarded(call, request) for call in turn.tool_calls()]
            calls = confined(plan(said, taken), offered)
            if not calls:
                yield Finish(turn.finish or "stop")
                return
            runnable = [c for c in calls if c.name in offered]
            run = number <= self._max_rounds and self._runner.can_run(runnable)
            if run:
                await self._runner.open(calls)
            yield ToolCallsReady(tuple(calls), run=run)
            if not run:
                yield Finish("tool_calls")
                return
            yield ToolsWaiting(True)
            try:
                results = await asyncio.gather(*(self._result(c, offered) for c in calls))
            finally:
                await self._runner.close(calls)
            yield ToolsWaiting(False)
            rounds = [assistant_turn(turn, calls), *tool_results(calls, results)]
            if self._transcript is not None:
                self._transcript.extend(rounds)
            messages = [*messages, *rounds]

    async def _result(self, call: PlannedCall, offered: set[str]) -> dict[str, Any]:
        if call.name not in offered:
            return failure(f"the request offered no tool named {call.name!r}; it did not run")
        return await self._runner.run(call)


def _guarded(call: ToolCall, request: LlmRequest) -> ToolCall:
    """The call with every secret the process knows out of its arguments: they go to the
    webhook, the pages (`function_call`, `llmToolCall`), the thread and the outcome."""
    arguments = without_secrets(call.arguments, request.api_key)
    return call if arguments == call.arguments else replace(call, arguments=arguments)


def call_ids(messages: list[dict[str, Any]]) -> set[str]:
    """The ids of the tool calls the conversation's assistant turns made."""
    return {
        str(call.get("id"))
        for message in messages
        if message.get("role") == "assistant" and isinstance(message.get("tool_calls"), list)
        for call in message["tool_calls"]
        if isinstance(call, dict)
    }


def confined(calls: list[PlannedCall], offered: set[str]) -> list[PlannedCall]:
    """Calls of tools the request did not offer run nowhere (the model is told so): not on
    the app's webhook, which serves all its flows, nor as a `ui_` call a page may handle
    for another flow. Not frontend, no page hears of them as `llmToolCall`."""
    return [c if c.name in offered or not c.frontend else replace(c, frontend=False) for c in calls]


def unforced(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """`tool_choice` for the rounds after the first: "required" or a named function would
    force another call every round until `max_rounds`, so it becomes the provider's default
    (None: auto); "auto" and "none" stay."""
    return choice if choice in ("auto", "none") else None


def assistant_turn(turn: TurnState, calls: list[PlannedCall]) -> dict[str, Any]:
    """The model's turn, to send back: its text, reasoning blocks and calls (OpenAI format
    plus the extension fields the adapters translate: reasoning_blocks, thought_signature).
    `calls` are the turn's calls as planned (same order), for the ids the results answer."""
    tool_calls = []
    for call, planned in zip(turn.tool_calls(), calls, strict=True):
        # The arguments as run (repaired); not an object: providers need one, and the
        # result says the call did not run.
        arguments = (
            json.dumps(planned.arguments, ensure_ascii=False)
            if isinstance(planned.arguments, dict)
            else "{}"
        )
        entry: dict[str, Any] = {
            "id": planned.model_id,
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        }
        if call.signature:
            entry["thought_signature"] = call.signature
        tool_calls.append(entry)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": turn.answer() or None,
        "tool_calls": tool_calls,
    }
    if turn.reasoning_blocks:
        message["reasoning_blocks"] = list(turn.reasoning_blocks)
    return message


def tool_results(calls: list[PlannedCall], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "role": "tool",
            "tool_call_id": call.model_id,
            "content": json.dumps(result, ensure_ascii=False),
        }
        for call, result in zip(calls, results, strict=True)
    ]
