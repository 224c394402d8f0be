"""A stream's end is one end for every reader: the final record is written before the
channels get `end`, so a page that hears `end` and resumes (or resumes while it comes)
never reads `streaming` with no `end` to follow. The caller's own answer gets its `end`
at once (it reads no record), and a final write that fails or hangs never holds `end` back
for good."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from streaming_proxy import aws, relayend
from streaming_proxy.blocking import BlockingCalls
from streaming_proxy.channels.session import ConnectionRoutes
from streaming_proxy.config import Settings
from streaming_proxy.events import Finish, TextDelta
from streaming_proxy.recorder import StreamRecorder
from streaming_proxy.relay import Relay
from streaming_proxy.streams import StreamRecord, StreamStore
from tests.unit.conftest import MOTO_TABLE
from tests.unit.test_relay import Recorder, Scripted, job

STREAM = "st_test"  # test_relay.job's stream


class ResumingPage:
    """A channel sink that is also a page: whenever a message reaches it, it sends
    `resume` over the WebSocket routes, as a page does on `end` or on a gap."""

    def __init__(self, routes: ConnectionRoutes, replies: list[dict[str, Any]]) -> None:
        self._routes = routes
        self._replies = replies
        self.envelopes: list[dict[str, Any]] = []
        self.snapshots: list[tuple[str, dict[str, Any]]] = []

    async def start(self) -> None:
        return None

    async def send(self, envelope: dict[str, Any]) -> None:
        self.envelopes.append(envelope)
        body = json.dumps({"action": "resume", "streamId": STREAM, "afterSeq": -1})
        await asyncio.to_thread(self._routes.message, "conn1", body)
        self.snapshots.append((envelope["type"], self._replies.pop()))

    async def close(self) -> None:
        return None


@pytest.fixture
async def store(aws_env: None) -> AsyncIterator[StreamStore]:
    streams = StreamStore(aws.dynamodb("us-east-1", None), MOTO_TABLE)
    streams.create(StreamRecord(STREAM, "app1", "onLlm", ["room"]))
    streams.mark_started(STREAM)
    yield streams


def routes_over(store: StreamStore, replies: list[dict[str, Any]]) -> ConnectionRoutes:
    settings = Settings(table_name=MOTO_TABLE, aws_region="us-east-1")

    def reply(connection_id: str, message: dict[str, Any]) -> bool:
        replies.append(message)
        return True

    routes = ConnectionRoutes.from_settings(settings, reply=reply)
    routes._connections.open("conn1", "app1", ["room"])
    return routes


def slowed(fn: Callable[..., Any], seconds: float, fails: bool = False) -> Callable[..., Any]:
    """`fn` (a blocking store call, run on the DynamoDB pool) after `seconds`; raising
    instead, as a table that refuses every try, with `fails`."""

    def call(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        if fails:
            raise ConnectionError("the table does not answer")
        return fn(*args, **kwargs)

    return call


async def relay_of(
    store: StreamStore, page: ResumingPage, caller: Recorder, db: BlockingCalls
) -> Relay:
    recorder = StreamRecorder(store, STREAM, db, final_attempts=2)
    provider = Scripted([TextDelta("Hello "), TextDelta("world"), Finish("stop")])
    return Relay(job(), provider, [caller], settings=Settings(), channels=page, recorder=recorder)


async def test_a_page_that_resumes_on_end_reads_the_stream_ended(store: StreamStore) -> None:
    """The final write held for 0.4 s: the caller's answer gets `end` at once (the record
    still `streaming`), the channels only once the record is final, and a resume sent on
    every message before `end` still reads `streaming` (its `end` is still to come)."""
    replies: list[dict[str, Any]] = []
    page, caller = ResumingPage(routes_over(store, replies), replies), Recorder()
    store.save_final = slowed(store.save_final, 0.4)  # type: ignore[method-assign]
    db = BlockingCalls(4, "test-db")
    caller_saw: list[str] = []
    send = caller.send

    async def caller_send(envelope: dict[str, Any]) -> None:
        await send(envelope)
        if envelope["type"] == "end":
            record = await asyncio.to_thread(store.get, STREAM)
            caller_saw.append(record.status if record else "gone")

    caller.send = caller_send  # type: ignore[method-assign]
    await (await relay_of(store, page, caller, db)).run()
    db.shutdown()

    assert caller_saw == ["streaming"]  # not held behind the final write
    assert [t for t, _ in page.snapshots] == ["threadInfo", "delta", "delta", "end"]
    assert [e["type"] for e in page.envelopes].count("end") == 1
    ((_, at_end),) = [(t, s) for t, s in page.snapshots if t == "end"]
    assert at_end["type"] == "snapshot" and at_end["status"] == "done"
    assert (at_end["content"], at_end["seq"]) == ("Hello world", page.envelopes[-1]["seq"])
    assert all(s["status"] == "streaming" for t, s in page.snapshots if t != "end")


async def test_end_reaches_the_channels_once_when_the_final_write_fails(
    store: StreamStore,
) -> None:
    """Nothing lost: every try of the final write failing, `end` still goes out, once, and
    the stream says its record failed."""
    replies: list[dict[str, Any]] = []
    page, caller = ResumingPage(routes_over(store, replies), replies), Recorder()
    store.save_final = slowed(store.save_final, 0.0, fails=True)  # type: ignore[method-assign]
    db = BlockingCalls(4, "test-db")
    the_relay = await relay_of(store, page, caller, db)
    outcome = await the_relay.run()
    db.shutdown()
    assert outcome.finish_reason == "stop"
    assert [e["type"] for e in page.envelopes] == ["threadInfo", "delta", "delta", "end"]
    assert caller.types() == ["threadInfo", "delta", "delta", "end"]
    assert the_relay.stats.record_failed is True


async def test_a_final_write_that_hangs_holds_end_back_a_bounded_time(
    store: StreamStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table that hangs (botocore's timeouts, minutes) must not keep the pages' `end`:
    it goes out after END_WAITS_FOR_RECORD_SECONDS, and the relay still ends only once
    the write did (the record final when `run` returns)."""
    monkeypatch.setattr(relayend, "END_WAITS_FOR_RECORD_SECONDS", 0.2)
    replies: list[dict[str, Any]] = []
    page, caller = ResumingPage(routes_over(store, replies), replies), Recorder()
    store.save_final = slowed(store.save_final, 1.0)  # type: ignore[method-assign]
    db = BlockingCalls(4, "test-db")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await (await relay_of(store, page, caller, db)).run()
    took = loop.time() - started
    db.shutdown()
    (end,) = [s for t, s in page.snapshots if t == "end"]
    assert end["status"] == "streaming"  # it went first: the write was still hanging
    assert took >= 1.0
    record = store.get(STREAM)
    assert record is not None and record.status == "done"
