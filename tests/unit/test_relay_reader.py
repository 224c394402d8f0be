"""The relay's reader: each provider event is handled in the task that read it (no queue,
no second task per event), and stops and deadlines act between two events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from streaming_proxy.config import Settings
from streaming_proxy.events import Finish, ProviderEvent, TextDelta
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.relay import Relay

from .test_relay import Recorder, Scripted, job


class TaskNoting:
    """A provider noting the task that reads each of its events."""

    name = "noting"

    def __init__(self, events: list[ProviderEvent]) -> None:
        self.events = events
        self.readers: list[asyncio.Task[Any] | None] = []

    def prepare(self, request: LlmRequest) -> None:
        return None

    async def stream(self, request: LlmRequest) -> AsyncIterator[ProviderEvent]:
        for event in self.events:
            await asyncio.sleep(0)
            self.readers.append(asyncio.current_task())
            yield event


class TaskRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def send(self, envelope: dict[str, Any]) -> None:
        if envelope["type"] == "delta":
            self.tasks.append(asyncio.current_task())
        await super().send(envelope)


class Blocking(Recorder):
    """A sink whose delivery of one chosen delta waits until it is let go."""

    def __init__(self, blocked: str) -> None:
        super().__init__()
        self.blocked = blocked
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def send(self, envelope: dict[str, Any]) -> None:
        if envelope.get("content") == self.blocked:
            self.reached.set()
            await self.go.wait()
        await super().send(envelope)


async def test_each_event_reaches_the_sinks_in_the_task_that_read_it() -> None:
    provider = TaskNoting([TextDelta("a"), TextDelta("b"), TextDelta("c"), Finish("stop")])
    sink = TaskRecorder()
    outcome = await Relay(job(), provider, [sink], settings=Settings()).run()
    assert outcome.error is None and sink.text() == "abc"
    # One task reads the provider and hands every delta on: no hop between two tasks.
    assert len(set(provider.readers)) == 1
    assert sink.tasks == provider.readers[:3]


async def test_a_stop_while_an_event_is_handled_ends_the_stream_after_that_event() -> None:
    provider = Scripted([TextDelta("one"), TextDelta("two"), 0.05, TextDelta("three"), 30.0])
    sink = Blocking("two")
    relay = Relay(job(), provider, [sink], settings=Settings())
    running = asyncio.create_task(relay.run())
    await asyncio.wait_for(sink.reached.wait(), 5)
    relay.cancel()  # "two" is being delivered: it goes out whole, nothing after it
    sink.go.set()
    outcome = await asyncio.wait_for(running, 5)
    assert outcome.finish_reason == "cancelled" and outcome.error is None
    assert sink.text() == "onetwo"
    assert sink.envelopes[-1]["type"] == "end" and sink.closed
    assert provider.closed  # the upstream response was closed


async def test_a_stop_between_events_closes_the_upstream_at_once() -> None:
    provider = Scripted([TextDelta("one"), TextDelta("two"), 30.0, TextDelta("never")])
    sink = Blocking("two")
    relay = Relay(job(), provider, [sink], settings=Settings())
    running = asyncio.create_task(relay.run())
    await asyncio.wait_for(sink.reached.wait(), 5)
    sink.go.set()
    await asyncio.sleep(0.05)  # "two" delivered; the reader waits for the provider again
    relay.cancel()
    outcome = await asyncio.wait_for(running, 2)
    assert outcome.finish_reason == "cancelled" and provider.closed
    assert sink.text() == "onetwo"


async def test_a_deadline_due_while_an_event_is_handled_is_judged_after_it() -> None:
    # The idle limit passes while the sink holds the last delta; the Finish that follows at
    # once still counts: the stream ends complete, not timed out.
    provider = Scripted([TextDelta("a"), TextDelta("b"), Finish("stop")])
    sink = Blocking("b")
    relay = Relay(job(), provider, [sink], settings=Settings(idle_timeout_seconds=0.1))
    running = asyncio.create_task(relay.run())
    await asyncio.wait_for(sink.reached.wait(), 5)
    await asyncio.sleep(0.3)
    sink.go.set()
    outcome = await asyncio.wait_for(running, 5)
    assert outcome.error is None and outcome.finish_reason == "stop"
    assert sink.text() == "ab"


async def test_a_stop_after_the_end_changes_nothing() -> None:
    sink = Recorder()
    relay = Relay(job(), Scripted([TextDelta("done"), Finish("stop")]), [sink], settings=Settings())
    outcome = await relay.run()
    relay.cancel()
    assert outcome.finish_reason == "stop" and sink.envelopes[-1]["finish_reason"] == "stop"
