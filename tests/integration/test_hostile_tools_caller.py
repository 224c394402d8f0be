"""The caller of a stream with tools misbehaves while a tool waits: the pages on the
stream's channels must still get the whole answer and one `end`."""

from __future__ import annotations

from tests.conftest import Stack, sse_query
from tests.delivery import assert_complete
from tests.integration.test_tool_loop import (
    ASK_COLOUR,
    SAY_COLOUR,
    answer,
    query,
    start,
    tool_call,
)
from tests.wsclient import Subscriber


async def test_an_sse_caller_hanging_up_while_a_tool_waits_leaves_the_pages_whole(
    stack: Stack,
) -> None:
    channel = "hostile-sse-gone-tool"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        async with sse_query(stack, query(channel, [ASK_COLOUR, SAY_COLOUR])) as r:
            async for line in r.aiter_lines():
                if line == "event: llmToolCall":
                    break  # the caller hangs up while the page's tool waits
        call = await sub.wait_for(lambda m: m.get("type") == "llmToolCall")
        assert (await answer(sub, call["toolCallId"], "ochre"))["type"] == "ack"
        messages = await sub.stream(call["streamId"], within=15)
        assert_complete(messages, "Let me pick. The colour is ochre.")
        assert messages[-1]["finish_reason"] == "stop"
    finally:
        await sub.close()


async def test_a_page_resuming_after_a_tool_round_reads_the_whole_text_and_summed_usage(
    stack: Stack,
) -> None:
    # The record is written by the relay across rounds: one text for both rounds, the
    # last seq, the summed usage, exactly what the live `end` said.
    channel = "hostile-resume-tools"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        stream_id = await start(stack, query(channel, [ASK_COLOUR, SAY_COLOUR]))
        call = await tool_call(sub, stream_id)
        await answer(sub, call["toolCallId"], "umber")
        live = await sub.stream(stream_id)
        await stack.finished(stream_id, within=5.0)
        since = len(sub.messages)
        await sub.send({"action": "resume", "streamId": stream_id})
        snapshot = await sub.wait_for(lambda m: m.get("type") == "snapshot", since=since)
    finally:
        await sub.close()
    end = live[-1]
    assert snapshot["content"] == "Let me pick. The colour is umber."
    assert (snapshot["status"], snapshot["seq"]) == ("done", end["seq"])
    assert (snapshot["finish_reason"], snapshot["usage"]) == ("stop", end["usage"])
