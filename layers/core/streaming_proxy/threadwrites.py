"""The transactions of a thread's runs (threads.py), built apart from the calls that send
them: taking the thread (META's lease, the run's `RUN#` item and a `CHAN#<channel>` item per
channel it publishes to) and appending a run's messages (its `MSG#` items, its `INDEX#`
entry, META's counters and release, the run's final status)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .tablekeys import RUN, index_sk, msg_sk, thread_key

RunStatus = Literal["running", "done", "failed", "cancelled"]
Action = dict[str, Any]

# A channel a run of the thread published to: one item each, not a set on META, which
# would grow with every new channel until META passed DynamoDB's 400 KB and the thread
# could never be written again.
CHANNEL_SK = "CHAN#"
# Channel items in the transaction that takes the thread (100 actions at most, META and
# RUN# beside them); a run's further channels are written right after it (threads.py).
CHANNELS_IN_TAKE = 48


@dataclass(frozen=True, slots=True)
class RunStart:
    """A run about to take its thread: `new` creates the thread; the lease ends at
    `lease_until`; every item written lives `ttl_seconds` from now."""

    thread_id: str
    run_id: str
    stream_id: str
    new: bool
    lease_until: int
    ttl_seconds: int
    # The channels the run publishes to: the thread remembers every one (a page holding a
    # subscribe token for one of them may read the thread).
    channels: tuple[str, ...] = ()


def take(app_id: str, start: RunStart, now: int) -> list[Action]:
    """Create the thread holding the run's lease, or take an existing thread's lease (one
    within its TTL) when no run holds it or the holder's lease is over; and put the run's
    record."""
    key = thread_key(app_id, start.thread_id)
    expires = {"N": str(now + start.ttl_seconds)}
    lease = {"N": str(start.lease_until)}
    meta: Action
    if start.new:
        item = {**key, "createdAt": {"N": str(now)}, "updatedAt": {"N": str(now)}}
        item |= {"msgCount": {"N": "0"}, "nextItem": {"N": "0"}, "expiresAt": expires}
        item |= {"activeRun": {"S": start.run_id}, "leaseUntil": lease}
        meta = {"Put": {"Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}
    else:
        values: dict[str, Any] = {":run": {"S": start.run_id}, ":lease": lease}
        values[":now"] = {"N": str(now)}
        values[":exp"] = expires
        update = "SET activeRun = :run, leaseUntil = :lease, updatedAt = :now, expiresAt = :exp"
        meta = {
            "Update": {
                "Key": key,
                "UpdateExpression": update,
                # Past its TTL a thread is gone, though DynamoDB deletes it late.
                "ConditionExpression": "attribute_exists(pk) AND "
                "(attribute_not_exists(expiresAt) OR expiresAt >= :now) AND "
                "(attribute_not_exists(activeRun) OR leaseUntil < :now)",
                "ExpressionAttributeValues": values,
            }
        }
    run = thread_key(app_id, start.thread_id, RUN + start.run_id)
    run |= {"streamId": {"S": start.stream_id}, "status": {"S": "running"}}
    run |= {"createdAt": {"N": str(now)}, "expiresAt": expires}
    puts = [{"Put": {"Item": item}} for item in channel_items(app_id, start, now)]
    return [meta, {"Put": {"Item": run}}, *puts[:CHANNELS_IN_TAKE]]


def channel_items(app_id: str, start: RunStart, now: int) -> list[Action]:
    """A `CHAN#<channel>` item per channel the run publishes to: a page holding a subscribe
    token for one of them may read the thread while the item lives (each run on it puts
    it again, with the thread's TTL)."""
    expires = {"N": str(now + start.ttl_seconds)}
    return [
        thread_key(app_id, start.thread_id, CHANNEL_SK + channel) | {"expiresAt": expires}
        for channel in sorted(set(start.channels))
    ]


def append(
    app_id: str,
    start: RunStart,
    datas: list[str],
    count: int,
    status: RunStatus,
    first: int,
    now: int,
    number: int,
) -> list[Action]:
    """Release the thread (only while the run holds it), count `count` more messages, put
    the items `datas` from item number `first` on (the run's first message is the thread's
    message `number`) and keep the next item's number on META, and record how the run
    ended."""
    expires = {"N": str(now + start.ttl_seconds)}
    release = {
        "Update": {
            "Key": thread_key(app_id, start.thread_id),
            "UpdateExpression": "SET msgCount = msgCount + :count, updatedAt = :now, "
            "expiresAt = :exp, nextItem = :next REMOVE activeRun, leaseUntil",
            "ConditionExpression": "activeRun = :run",
            "ExpressionAttributeValues": {
                ":count": {"N": str(count)},
                ":next": {"N": str(first + len(datas))},
                ":now": {"N": str(now)},
                ":exp": expires,
                ":run": {"S": start.run_id},
            },
        }
    }
    ended = {
        "Update": {
            "Key": thread_key(app_id, start.thread_id, RUN + start.run_id),
            "UpdateExpression": "SET #status = :status, expiresAt = :exp",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":status": {"S": status}, ":exp": expires},
        }
    }
    actions = [release, ended]
    items = _message_items(app_id, start, datas, first, number, expires)
    for item in items:
        put = {"Item": item, "ConditionExpression": "attribute_not_exists(pk)"}
        actions.append({"Put": put})
    return actions


def _message_items(
    app_id: str, start: RunStart, datas: list[str], first: int, number: int, expires: Any
) -> list[Action]:
    """The run's `MSG#` items, each naming the number of the run's first message (`first`),
    and its `INDEX#<number>` entry pointing at its first item: a page finds the run holding
    any message with one small read (threadreads.py). A run without messages has neither."""
    items = []
    for offset, data in enumerate(datas):
        item = thread_key(app_id, start.thread_id, msg_sk(first + offset))
        item |= {"run": {"S": start.run_id}, "parts": {"N": str(len(datas))}}
        item |= {"first": {"N": str(number)}, "data": {"S": data}, "expiresAt": expires}
        items.append(item)
    if datas:
        entry = thread_key(app_id, start.thread_id, index_sk(number))
        entry |= {"item": {"N": str(first)}, "expiresAt": expires}
        items.append(entry)
    return items
