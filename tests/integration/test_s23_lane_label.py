"""What a page sees of its lane's label on the running stack: a page in two of a stream's
channels that leaves the first is told, from the next membership refresh on, the channel
it still hears the stream through, and still gets the exact text once, in order."""

from __future__ import annotations

import asyncio

from tests.conftest import Stack
from tests.delivery import assert_complete, covered
from tests.integration.test_hostile_life_catchup import TEXT, ask, past, start, subscribe
from tests.wsclient import Subscriber

# More than the stack's membership refresh (1 s): the publisher has read the change.
REFRESHED = 1.5


async def test_a_page_leaving_its_first_channel_is_told_the_one_it_stays_in(
    stack: Stack,
) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("lb-one"))
    try:
        sid = await start(stack, ["lb-one", "lb-two"], delay=40)  # 150 pieces, ~6 s
        await past(sub, sid, 5)
        await subscribe(stack, sub, "lb-two")
        await asyncio.sleep(REFRESHED)  # in both: still labelled lb-one, the first
        await ask(sub, {"action": "unsubscribe", "channel": "lb-one"}, "unsubscribed")
        await asyncio.sleep(REFRESHED)
        switched = max(m["seq"] for m in sub.of(sid))
        messages = await sub.stream(sid, within=30)
    finally:
        await sub.close()
    assert_complete(messages, TEXT)
    assert covered(messages) == list(range(messages[-1]["seq"] + 1))  # once each, in order
    assert {m["channel"] for m in messages if m["seq"] <= 5} == {"lb-one"}
    later = [m for m in messages if m["seq"] > switched]
    assert later and {m["channel"] for m in later} == {"lb-two"}, later[:3]
