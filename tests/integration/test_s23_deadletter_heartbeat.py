"""A dead letter for a stream whose relay still runs (another delivery of its event failed
at the claim) fails nothing: it is deferred while the relay's heartbeat is fresh, left
alone once the relay finished, and reported (`error` + `end`, once each) once the
heartbeat went stale, the relay dead. The deployed handler against moto's DynamoDB server
and the gateway emulator, with a real WebSocket subscriber."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.integration import test_dead_letters as dead_letters
from tests.integration import test_gateway as gateway_tests
from tests.integration.test_dead_letters import dead_letter, last_beat_at, registered, streams
from tests.integration.test_gateway import Gateway, connection_id_of, open_client, token
from tests.wsclient import nothing_more, until_end

moto_endpoint = gateway_tests.moto_endpoint
env = gateway_tests.env
gateway = gateway_tests.gateway
handle = dead_letters.handle

DONE_USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


async def test_a_dead_letter_waits_while_the_relay_beats_and_then_finds_it_finished(
    gateway: Gateway, handle: Callable[..., Any]
) -> None:
    registered("st_alive", "streaming")  # claimed; its relay beat a moment ago
    letter = dead_letter("st_alive", "RetriesExhausted")  # the duplicate's failed claim
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        # Deferred: SQS shows it again after the queue's visibility timeout.
        assert await handle(letter) == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
        record = streams().get("st_alive")
        assert record is not None and record.status == "streaming"
        # The relay finishes meanwhile; the record comes back: nothing to do.
        streams().save_final(
            "st_alive", "All of it", 7, "done", finish_reason="stop", usage=DONE_USAGE
        )
        assert await handle(letter) == {"batchItemFailures": []}
        await nothing_more(ws)
    record = streams().get("st_alive")
    assert record is not None and (record.status, record.last_seq) == ("done", 7)


async def test_a_deferred_dead_letter_fails_the_stream_once_its_heartbeat_is_stale(
    gateway: Gateway, handle: Callable[..., Any]
) -> None:
    registered("st_stops_beating", "streaming")
    letter = dead_letter("st_stops_beating", "RetriesExhausted")
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        assert await handle(letter) == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
        last_beat_at("st_stops_beating", time.time() - 61)  # the relay died since
        assert await handle(letter, letter) == {"batchItemFailures": []}  # a copy: told once
        messages = await until_end(ws)
        await nothing_more(ws)
    assert [(m["type"], m["seq"]) for m in messages] == [("error", 5), ("end", 6)]
    assert messages[0]["error"]["details"] == "lambda: RetriesExhausted"
    record = streams().get("st_stops_beating", text=True)
    assert record is not None and (record.status, record.last_seq) == ("failed", 6)
    assert record.text == "Half an ans"
