"""DynamoDB units per stream: what one 1,000-token stream costs in read and write units.

The relay runs in-process (`StreamService`, the product's own code from the request's record
to the final write) against moto's DynamoDB, in a subprocess of its own so moto's patching
of botocore stays there. A `UnitMeter` (unit_meter.py) hooks the service's DynamoDB client
and prices every call from the item sizes at that moment, as DynamoDB bills them. The
upstream is the built-in `mock` provider pacing 1,000 chunks of ~4 characters 20 ms apart
(50 tokens/s, a brisk model: 20 s), so the stream sees ~20 snapshots, ~40 cancel polls and
~20 membership refreshes at the default intervals. Posts go to an in-process poster that
keeps them, and the first subscriber's text is checked to be exact.

`python -m benchmarks.dynamo_units` prints the measurement as JSON (run with another
checkout's `layers/core` first on PYTHONPATH to measure that code: the BEFORE numbers).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
from typing import Any

from .common import Result, text_of_words
from .stack import ROOT
from .unit_meter import UnitMeter

TOKENS = 1000
CHARS_PER_TOKEN = 4
TOKEN_DELAY_MS = 20
# (key, label, subscribers, to the first subscriber's private channel `tab|<id>`)
SCENARIOS: list[tuple[str, str, int, bool]] = [
    ("1", "1 subscriber on a channel", 1, False),
    ("10", "10 subscribers on a channel", 10, False),
    ("tab", "1 subscriber, to its private channel `tab|<id>`", 1, True),
]
REGION = "us-east-1"
TABLE = "bench-units"
APP = "bench"
CHANNEL = "units"
MARK = "dynamo_units: "  # the result line (the service logs JSON lines on stdout too)

# Measured on this benchmark with main's code before the segments (commit de30272), with
# the same command: `PYTHONPATH=<main>/layers/core:. python -m benchmarks.dynamo_units`.
BEFORE: dict[str, dict[str, float]] = {
    "1": {"reads": 53.0, "writes": 62.0, "resume_reads": 2.0},
    "10": {"reads": 54.0, "writes": 64.0, "resume_reads": 2.0},
    "tab": {"reads": 53.0, "writes": 67.0, "resume_reads": 2.0},
}

# What each operation is for, in the stream's life.
PURPOSE = {
    "GetItem": "cancel polls",
    "Query": "membership reads",
    "UpdateItem": "status and snapshot pointer",
    "PutItem": "record + text segments",
}


def run() -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.dynamo_units"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith(MARK))
    measured: dict[str, dict[str, Any]] = json.loads(line.removeprefix(MARK))
    return _result(measured)


def _result(measured: dict[str, dict[str, Any]]) -> Result:
    rows = []
    for key, label, _, _ in SCENARIOS:
        m = measured[key]
        rows.append(
            [
                label,
                f"{m['reads']:.1f}",
                f"{m['writes']:.0f}",
                _by_operation(m["operations"]),
                f"{m['resume_reads']:.1f}",
                _before(key),
            ]
        )
    return Result(
        key="dynamo_units",
        title="DynamoDB units per 1,000-token stream",
        method=__doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        columns=[
            "stream",
            "read units",
            "write units",
            "by operation (calls: read / write units)",
            "resume after the end (read units)",
            "before: read / write",
        ],
        rows=rows,
        notes=[
            "Read units count strongly consistent reads at 1 per 4 KB, eventually consistent "
            "ones at half; write units 1 per 1 KB of the larger item size before/after.",
            "At on-demand prices (us-east-1, $0.125 per million read and $0.625 per million "
            "write request units) a million such streams cost about " + _dollars(measured["1"]),
            "The relay here runs in-process, as an SSE answer or a local detached one does. A "
            "detached relay in Lambda (DETACH_MODE=lambda) adds its claim and its heartbeat: "
            "1 write unit each, the heartbeat every HEARTBEAT_SECONDS (10): 3 write units "
            "for this 20 s stream, 0.1 a second however long it runs.",
        ],
        data={"measured": measured, "before": BEFORE},
    )


def _before(key: str) -> str:
    before = BEFORE.get(key)
    return f"{before['reads']:.1f} / {before['writes']:.0f}" if before else "not measured"


def _by_operation(operations: dict[str, list[float]]) -> str:
    parts = []
    for name, (reads, writes, calls) in sorted(operations.items()):
        what = PURPOSE.get(name, name)
        parts.append(f"{name} ({what}) x{calls:.0f}: {reads:.1f} / {writes:.0f}")
    return "; ".join(parts)


def _dollars(m: dict[str, Any]) -> str:
    return f"${m['reads'] * 0.125 + m['writes'] * 0.625:,.0f}."


# -- the measurement (in the subprocess) -------------------------------------------------------


async def _stream(key: str, subscribers: int, tab: bool, meter: UnitMeter) -> dict[str, Any]:
    from streaming_proxy.config import Settings
    from streaming_proxy.contract import StreamRequest
    from streaming_proxy.jobs import StreamJob
    from streaming_proxy.service import StreamService
    from streaming_proxy.streams import new_stream_id
    from tests.delivery import assert_complete

    poster = _KeepingPoster()
    settings = Settings(table_name=TABLE, aws_region=REGION, dynamodb_endpoint_url=None)
    service = StreamService(settings, poster=poster)
    connections = [f"conn-{key}-{i}" for i in range(subscribers)]
    channel = f"tab|{connections[0]}" if tab else f"{CHANNEL}-{key}"
    for connection_id in connections:
        service.connections.open(connection_id, APP, [channel])
    text = text_of_words(TOKENS)[: TOKENS * CHARS_PER_TOKEN]
    body = StreamRequest.model_validate(
        {
            "channels": [channel],
            "actionName": "onUnits",
            "payload": {
                "provider": "mock",
                "messages": [{"role": "user", "content": "count"}],
                "providerArgs": {"text": text, "chunks": TOKENS, "delayMs": TOKEN_DELAY_MS},
            },
        }
    )
    job = StreamJob(
        stream_id=new_stream_id(),
        app_id=APP,
        kind="llm",
        action_name="onUnits",
        channels=[channel],
        payload=body.payload,
        flush_interval_ms=settings.flush_interval_ms,
    )
    meter.reset()
    await service.register(job)
    outcome = await service.run(service.relay(job))
    assert outcome.error is None, outcome.error
    assert_complete(poster.messages(connections[0], job.stream_id), text)
    measured: dict[str, Any] = {
        "reads": meter.reads,
        "writes": meter.writes,
        "operations": {k: list(v) for k, v in meter.units.items()},
    }
    meter.reset()
    get = service.streams.get
    with_text = "text" in inspect.signature(get).parameters
    record = get(job.stream_id, text=True) if with_text else get(job.stream_id)  # type: ignore[call-arg]
    assert record is not None and record.text == text
    measured["resume_reads"] = meter.reads
    await service.aclose()
    return measured


class _KeepingPoster:
    """Keeps every post (no network): the meter counts DynamoDB, not deliveries."""

    def __init__(self) -> None:
        self.slots = asyncio.Semaphore(64)
        self.posts: list[tuple[str, bytes]] = []

    async def post(self, connection_id: str, data: bytes) -> None:
        self.posts.append((connection_id, data))

    async def aclose(self) -> None:
        return None

    def messages(self, connection_id: str, stream_id: str) -> list[dict[str, Any]]:
        found = [json.loads(d) for c, d in self.posts if c == connection_id]
        return [m for m in found if m.get("streamId") == stream_id]


def _measure() -> dict[str, dict[str, Any]]:
    from moto import mock_aws

    from devstack.template import create_table

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[name] = "bench"
    os.environ["AWS_DEFAULT_REGION"] = REGION
    with mock_aws():
        import boto3

        from streaming_proxy import aws

        create_table(boto3.client("dynamodb", region_name=REGION), TABLE)
        # The client the service will use (aws.dynamodb is cached), and one to peek with.
        meter = UnitMeter(aws.dynamodb(REGION, None), boto3.client("dynamodb", region_name=REGION))
        return {
            key: asyncio.run(_stream(key, subscribers, tab, meter))
            for key, _, subscribers, tab in SCENARIOS
        }


if __name__ == "__main__":
    print(MARK + json.dumps(_measure()))
