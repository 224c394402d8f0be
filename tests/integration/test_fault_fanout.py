"""Faults on the fan-out path the chaos suite leaves out, each checked against the counts.

Same stack and fault-injecting proxies as test_chaos.py: every live subscriber ends with
the exact text, contiguous seq and one `end`, or what it missed is in the stream's
'stream finished' record, seq for seq.
"""

from __future__ import annotations

from tests.chaos import server_error
from tests.delivery import covered, replay
from tests.integration import test_chaos
from tests.integration.test_chaos import WORDS, Chaos, finished, start_stream
from tests.wsclient import Subscriber

# The stack with its chaos proxies and three subscribers, exactly as test_chaos.py builds them.
chaos = test_chaos.chaos
subscribers = test_chaos.subscribers


async def test_a_late_joiner_that_misses_its_catch_up_is_counted_for_every_seq_before_it(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    channel = subscribers[0].channel  # type: ignore[attr-defined]
    joiner = await Subscriber.open(chaos.stack.ws, chaos.stack.token("elsewhere"))
    try:
        cid = (await joiner.connection_id()).replace("=", "%3D")
        # Its `subscribed` reply goes through; then the catch-up and all its retries fail
        # (the stack retries a post 6 times).
        chaos.management.add_rule(server_error(500), method="POST", path=cid, after=1, times=7)
        stream_id = await start_stream(chaos, channel, delayMs=60)
        await subscribers[0].wait_for(lambda m: m.get("streamId") == stream_id)
        await joiner.send(
            {"action": "subscribe", "channel": channel, "token": chaos.stack.token(channel)}
        )
        await joiner.wait_for(lambda m: m.get("type") == "subscribed")
        messages = await joiner.stream(stream_id, within=30)
        record = await finished(chaos, stream_id)
    finally:
        await joiner.close()
    assert record["catch_ups"] == 1
    assert not [m for m in messages if m["type"] == "snapshot"]
    seqs = covered(messages)
    end_seq = replay(subscribers[0].of(stream_id)).last_seq
    assert seqs == list(range(seqs[0], end_seq + 1)) and seqs[0] > 0
    # It missed seq 0 up to the snapshot's: every one of them is counted, not one.
    assert (record["post_failures"], record["dropped"]) == (1, seqs[0])
    for sub in subscribers:
        assert replay(sub.of(stream_id)).text == WORDS
