"""Property-based fuzzing of what a browser sends over the WebSocket, against the gateway
emulator of a local stack.

Every message (any JSON, action objects with fields of every type and size, text that is
not JSON) of 32 KB at most must get exactly one reply (a `snapshot` may come in parts) within
REPLY_TIMEOUT: JSON, of a type that answers its action, a refusal shaped
`{"type": "error", "error": {"message", "code"}}` with a documented code other than
`internal_error`, never API Gateway's `{"message": "Internal server error"}`, never a secret
the browser or the backend holds; and the connection stays open. A larger message, or a
binary frame, closes the connection as API Gateway does (1009, 1003), before any reply.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming_proxy.toolcalls import ToolCallRecord, ToolCallStore
from tests.conftest import Stack

from .budget import SCALE, seeded
from .ledger import SecretLedger
from .stack_log import LogWindow, assert_no_error_logged, assert_no_secret_logged
from .ws_messages import (
    CHANNEL,
    EDGE_MESSAGES,
    OTHER_CHANNEL,
    Known,
    edge_frame,
    frames,
    refusal,
)
from .ws_rules import check_replies
from .ws_tab import Tab


@dataclass(frozen=True)
class World:
    """A connection, and what its messages may name."""

    tab: Tab
    known: Known
    # Tool calls whose answer the connection was told was taken (`ack`).
    acked: set[str] = field(default_factory=set)

    def exchange(self, frame: str) -> list[str]:
        replies = self.tab.exchange(frame)
        for raw in replies:
            try:
                reply = json.loads(raw)
            except ValueError:
                continue
            if isinstance(reply, dict) and reply.get("type") == "ack":
                self.acked.add(str(reply.get("toolCallId")))
        return replies


@pytest.fixture(scope="module")
def world(stack: Stack, ledger: SecretLedger, log_window: LogWindow) -> Iterator[World]:
    token = ledger.add(stack.token(CHANNEL, f"{CHANNEL}-2"))
    streams = [
        _finished_stream(stack, CHANNEL, "hello fuzz"),
        _finished_stream(stack, CHANNEL, "word " * 30_000),  # 150 KB: a snapshot in parts
        _finished_stream(stack, OTHER_CHANNEL, "not yours"),
    ]
    tool_calls = _waiting_tool_calls(stack)
    tab = Tab(f"{stack.ws}/?token={token}")
    try:
        yield World(tab, Known(token, [*streams, "st_unknown"], tool_calls))
    finally:
        tab.close()


def _waiting_tool_calls(stack: Stack, count: int = 40) -> list[str]:
    """Records of frontend calls a stream waits on, as the tool loop writes them (written
    directly: a real waiting stream would publish to the tab between the fuzzer's fences)."""
    records = [
        ToolCallRecord(stack.app_id, f"tc_fuzz_{n}", "st_fuzz_tools", "ui_pick", [CHANNEL])
        for n in range(count)
    ]
    records.append(
        ToolCallRecord(stack.app_id, "tc_fuzz_elsewhere", "st_fuzz_x", "ui_pick", [OTHER_CHANNEL])
    )
    ToolCallStore(stack.dynamodb_client(), stack.table).open(records)
    return [r.call_id for r in records]


def _finished_stream(stack: Stack, channel: str, text: str) -> str:
    body = {
        "channels": [channel],
        "actionName": "onFuzz",
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "fuzz"}],
            "providerArgs": {"text": text, "chunks": 20, "delayMs": 0},
        },
    }
    r = httpx.post(
        f"{stack.http}/llm/query", json=body, headers={"x-api-key": stack.api_key}, timeout=10
    )
    r.raise_for_status()
    stream_id = str(r.json()["streamId"])
    deadline = time.monotonic() + 10
    while stack.finished_record(stream_id) is None:
        assert time.monotonic() < deadline, f"stream {stream_id} did not finish"
        time.sleep(0.05)
    return stream_id


@pytest.mark.parametrize("name", EDGE_MESSAGES)
def test_edge_messages_get_one_well_formed_reply(
    world: World, ledger: SecretLedger, name: str
) -> None:
    """The messages behind the failures found so far, every seed: a lone surrogate in each
    field of each action (JSON Python reads but cannot write as UTF-8), an action that is
    not a string, nesting deeper than Python's JSON parser goes."""
    frame = edge_frame(world.known, name)
    check_replies(frame, world.tab.exchange(frame), ledger)


@seeded(max_examples=400)
@given(data=st.data())
def test_every_message_gets_one_well_formed_reply(
    world: World, ledger: SecretLedger, data: st.DataObject
) -> None:
    frame = data.draw(frames(world.known), label="frame")
    code = refusal(frame)
    if code is not None:
        assert world.tab.refused(frame) == code
    else:
        assert isinstance(frame, str)
        check_replies(frame, world.exchange(frame), ledger)


def test_the_fuzzed_answers_reached_the_waiting_calls(
    stack: Stack, world: World, ledger: SecretLedger
) -> None:
    """After the fuzzed messages: every answer the connection was told was taken (`ack`) is
    the call's recorded answer, none is recorded for the call on a channel the tab is not
    in, and a well-formed answer sent now to a call the fuzzer left alone is taken too (so
    the path is always exercised, whatever the seed drew)."""
    if SCALE < 1:
        pytest.skip("FUZZ_SCALE < 1 sends too few answers to expect one recorded")
    untouched = next(c for c in reversed(world.known.tool_calls[:-1]) if c not in world.acked)
    answer = {
        "action": "llmToolCallResponse",
        "toolCallId": untouched,
        "success": True,
        "message": "ok",
    }
    replies = world.exchange(json.dumps(answer))
    check_replies(json.dumps(answer), replies, ledger)
    assert untouched in world.acked, f"a well-formed answer was refused: {replies}"
    store = ToolCallStore(stack.dynamodb_client(), stack.table)
    records = {c: store.get(stack.app_id, c) for c in world.known.tool_calls}
    answered = {c for c, r in records.items() if r is not None and r.status == "answered"}
    assert world.acked <= answered, f"acknowledged but not recorded: {world.acked - answered}"
    assert "tc_fuzz_elsewhere" not in answered


def test_stack_log_holds_no_secret(
    world: World, ledger: SecretLedger, log_window: LogWindow
) -> None:
    """Last in this module: the log written while it ran names no secret it used..."""
    assert_no_secret_logged(log_window, ledger)


def test_stack_log_holds_no_error(world: World, log_window: LogWindow) -> None:
    """...and no error: a route that failed may have answered, or may not."""
    assert_no_error_logged(log_window)
