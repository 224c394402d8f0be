"""A dead letter for a relay whose heartbeat is still fresh: the handler waits, in the same
invocation, until that heartbeat would be stale and looks again, so a relay that crashed
is told to its pages about a minute after its last beat rather than after the queue's
visibility timeout; a relay that lives has beaten meanwhile and is left alone."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from streaming_proxy import aws
from streaming_proxy.deadletter import (
    LOOK_AGAIN_MARGIN_SECONDS,
    LOOK_AGAIN_WITHIN_SECONDS,
    DeadLetters,
)
from streaming_proxy.service import StreamService
from streaming_proxy.streams import StreamStore
from tests.unit.conftest import MOTO_TABLE
from tests.unit.test_lambda_mode import RecordingPoster, settings
from tests.unit.test_s23_heartbeat import claimed, store


def beat_at(stream_id: str, when: float) -> None:
    """The relay's heartbeat, written as if at `when`."""
    aws.dynamodb("us-east-1", None).update_item(
        TableName=MOTO_TABLE,
        Key={"pk": {"S": f"STREAM#{stream_id}"}, "sk": {"S": "META"}},
        UpdateExpression="SET aliveAt = :alive",
        ExpressionAttributeValues={":alive": {"N": f"{when:.3f}"}},
    )


def batch(*stream_ids: str) -> dict[str, Any]:
    """An SQS batch of RetriesExhausted records (Lambda's on-failure destination)."""
    records = []
    for number, stream_id in enumerate(stream_ids):
        job = {"stream_id": stream_id, "app_id": "app1", "kind": "llm", "channels": ["room"]}
        body = {
            "requestContext": {"condition": "RetriesExhausted", "requestId": f"req-{number}"},
            "requestPayload": {"streamingProxyJob": job},
        }
        records.append({"messageId": f"m{number}", "body": json.dumps(body)})
    return {"Records": records}


class Run:
    """One handler run on a clock of its own: `sleep` moves it on, and the relays named
    in `living` beat while it waits."""

    def __init__(self, living: tuple[str, ...] = (), table_down_after_wait: bool = False) -> None:
        self.now = time.time()
        self.waits: list[float] = []
        self.living = living
        self.table_down_after_wait = table_down_after_wait
        self.poster = RecordingPoster()
        self.streams: StreamStore | None = None

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        for stream_id in self.living:
            beat_at(stream_id, self.now - 3)
        if self.table_down_after_wait and self.streams is not None:
            self.streams.get = _table_down  # type: ignore[method-assign]

    async def handle(
        self, event: dict[str, Any], seconds_left: Callable[[], float] = lambda: math.inf
    ) -> dict[str, Any]:
        service = StreamService(settings(), poster=self.poster)
        service.connections.open("conn1", "app1", ["room"])
        self.streams = service.streams
        letters = DeadLetters(
            service.streams,
            service.publisher,
            service.db,
            service.runs,
            clock=lambda: self.now,
            sleep=self.sleep,
        )
        try:
            return await letters.handle_batch(event, seconds_left)
        finally:
            await service.aclose()

    def posted(self) -> list[tuple[str, str]]:
        return [(m["streamId"], m["type"]) for _, m in self.poster.posts]


def _table_down(*args: Any, **kwargs: Any) -> Any:
    raise ConnectionError("the table does not answer")


def status(stream_id: str) -> str:
    record = store().get(stream_id)
    assert record is not None
    return record.status


async def test_a_relay_that_died_is_told_once_its_heartbeat_went_stale(aws_env: None) -> None:
    claimed("st_crash", beat_age=5)  # fresh when the dead letter comes: 55 s to go
    run = Run()
    assert await run.handle(batch("st_crash")) == {"batchItemFailures": []}
    [wait] = run.waits
    assert abs(wait - (60 - 5 + LOOK_AGAIN_MARGIN_SECONDS)) < 2
    assert run.posted() == [("st_crash", "error"), ("st_crash", "end")]
    assert status("st_crash") == "failed"


async def test_a_relay_that_beats_while_the_handler_waits_is_left_alone(aws_env: None) -> None:
    claimed("st_alive", beat_age=5)
    run = Run(living=("st_alive",))
    assert await run.handle(batch("st_alive")) == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert len(run.waits) == 1 and run.posted() == []
    assert status("st_alive") == "streaming"


async def test_one_wait_serves_the_batch_and_each_record_is_judged_on_its_own(
    aws_env: None,
) -> None:
    claimed("st_a", beat_age=50)  # stale in 10 s
    claimed("st_b", beat_age=20)  # stale in 40 s: the wait is for the later one
    claimed("st_c", beat_age=30)  # this relay lives on
    run = Run(living=("st_c",))
    answer = await run.handle(batch("st_a", "st_b", "st_c"))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    [wait] = run.waits
    assert abs(wait - (40 + LOOK_AGAIN_MARGIN_SECONDS)) < 2
    told = sorted(run.posted())
    assert told == [("st_a", "end"), ("st_a", "error"), ("st_b", "end"), ("st_b", "error")]
    assert (status("st_a"), status("st_b"), status("st_c")) == ("failed", "failed", "streaming")


async def test_no_wait_when_the_invocation_has_not_the_time(aws_env: None) -> None:
    claimed("st_short", beat_age=5)
    run = Run()
    answer = await run.handle(batch("st_short"), seconds_left=lambda: 60.0)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert run.waits == [] and run.posted() == []
    assert status("st_short") == "streaming"


async def test_no_wait_for_a_heartbeat_that_goes_stale_later_than_the_bound(
    aws_env: None,
) -> None:
    # Beats of 30 s (HEARTBEAT_SECONDS raised) go stale after 180 s: past the bound, the
    # record is deferred to the queue's visibility timeout as before.
    claimed("st_slow", beat_age=5, beat_seconds=30)
    run = Run()
    answer = await run.handle(batch("st_slow"))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert run.waits == [] and LOOK_AGAIN_WITHIN_SECONDS < 6 * 30 - 5
    assert status("st_slow") == "streaming"


async def test_a_table_that_fails_the_second_look_leaves_the_record_for_a_retry(
    aws_env: None,
) -> None:
    claimed("st_unread", beat_age=5)
    run = Run(table_down_after_wait=True)
    answer = await run.handle(batch("st_unread"))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert len(run.waits) == 1 and run.posted() == []
    assert status("st_unread") == "streaming"
