"""DETACH_MODE=lambda: a job whose event would not fit its dead letter is refused up front.

A failed or aged-out async invoke reaches the dead-letter queue as an invocation record
holding the event; one too large for the queue arrives without it, and its stream could
never be told. So the ack refuses such a job (413, "use SSE") before any invoke, whatever
makes it large, and marks its record failed as a refused invoke does.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from streaming_proxy.detached import MAX_DETACHED_EVENT_BYTES
from streaming_proxy.service import StreamService
from streaming_proxy.streams import StreamRecord
from tests.unit.test_lambda_mode import RecordingPoster, lambda_app, request, settings


def with_text(size: int) -> dict[str, Any]:
    body = request()
    body["payload"]["messages"] = [{"role": "user", "content": "a" * size}]
    return body


def with_image() -> dict[str, Any]:
    picture = base64.b64encode(b"\x89PNG" + bytes(600_000)).decode()  # 800 KB as base64
    body = request()
    body["payload"]["messages"] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{picture}"}},
            ],
        }
    ]
    return body


def with_tools() -> dict[str, Any]:
    body = request()
    body["payload"]["tools"] = [
        {
            "type": "function",
            "function": {
                "name": f"lookup_{n}",
                "description": "d" * 20_000,
                "parameters": {"type": "object", "properties": {}},
            },
        }
        for n in range(40)
    ]
    return body


def with_escaped_text() -> dict[str, Any]:
    """400 KB of UTF-8 in the body, 1.2 MB in the event (each `ü` travels as `\\u00fc`)."""
    body = request()
    body["payload"]["messages"] = [{"role": "user", "content": "ü" * 200_000}]
    return body


LARGE = {
    "text": lambda: with_text(MAX_DETACHED_EVENT_BYTES),
    "image-data-url": with_image,
    "tools": with_tools,
    "non-ascii-text": with_escaped_text,
}


@pytest.mark.parametrize("make", LARGE.values(), ids=LARGE.keys())
async def test_a_job_too_large_for_its_dead_letter_is_refused_before_any_invoke(
    aws_env: None, make: Any
) -> None:
    service = StreamService(settings(), poster=RecordingPoster())
    client, invoked = await lambda_app(service)
    created: list[str] = []
    create = service.streams.create

    def recorded(record: StreamRecord, **kwargs: Any) -> None:
        created.append(record.stream_id)
        create(record, **kwargs)

    service.streams.create = recorded  # type: ignore[method-assign]
    body = json.dumps(make(), ensure_ascii=False).encode()
    assert len(body) < service.settings.max_body_bytes  # a body the proxy takes
    r = await client.post("/llm/query", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["type"] == "payload_too_large"
    assert "Accept: text/event-stream" in error["message"]
    assert str(MAX_DETACHED_EVENT_BYTES) in error["message"]
    assert invoked == []
    (stream_id,) = created
    stored = service.streams.get(stream_id)
    assert stored is not None and stored.status == "failed"
    assert stored.start_error is not None and stored.start_error.kind == "payload_too_large"
    await client.aclose()
    await service.aclose()


async def test_a_job_within_the_bound_is_invoked_as_sent(aws_env: None) -> None:
    service = StreamService(settings(ack_wait_seconds=0), poster=RecordingPoster())
    client, invoked = await lambda_app(service)
    r = await client.post("/llm/query", json=with_text(MAX_DETACHED_EVENT_BYTES - 4096))
    assert r.status_code == 200, r.text
    (event,) = invoked
    size = len(json.dumps(event, separators=(",", ":")).encode())
    assert MAX_DETACHED_EVENT_BYTES - 4096 < size <= MAX_DETACHED_EVENT_BYTES
    await client.aclose()
    await service.aclose()
