"""Hostile cases of `rateLimit` over the whole app (ASGI, moto's table): requests refused
for their body, key, model or provider key are never counted, on either face; another
app's traffic never counts; the Klai and OpenAI faces share one counter; the refusal is
an integer `Retry-After` in each face's error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import boto3
import httpx
import pytest

from streaming_proxy.api.app import create_app
from streaming_proxy.auth import key_digest
from streaming_proxy.config import AppConfig
from streaming_proxy.limits import LimitStore
from streaming_proxy.service import StreamService
from tests.unit.conftest import MOTO_TABLE
from tests.unit.test_lambda_mode import RecordingPoster, settings
from tests.unit.test_limits import Clock

KEYS = {"limited": "limited-app-key-for-hostile-gov", "other": "other-app-key-for-hostile-gov"}
HI = [{"role": "user", "content": "hi"}]


def config(app_id: str, **governance: Any) -> AppConfig:
    entry = {"keySha256": key_digest(KEYS[app_id]), "tokenSecret": "s" * 32, **governance}
    return AppConfig.model_validate(entry)


@pytest.fixture
async def client(aws_env: None) -> AsyncIterator[httpx.AsyncClient]:
    apps = {
        "limited": config(
            "limited", rateLimit=2, models={"mock": ["echo"]}, allowClientProviderKey=False
        ),
        "other": config("other", rateLimit=1),
    }
    service = StreamService(settings(apps=apps, detach_mode="task"), poster=RecordingPoster())
    # A still clock: every request falls in one minute, whenever the test runs.
    service.limits = LimitStore(
        boto3.client("dynamodb", region_name="us-east-1"), MOTO_TABLE, Clock()
    )
    app = create_app()
    app.state.service = service
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fn") as c:
        yield c
    await service.aclose()


def klai(**payload: Any) -> dict[str, Any]:
    fields = {"provider": "mock", "model": "echo", "stream": False, "messages": HI}
    return {"actionName": "onLlm", "payload": fields | payload}


async def post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], app_id: str = "limited"
) -> httpx.Response:
    return await client.post(path, json=body, headers={"x-api-key": KEYS[app_id]})


async def test_only_admitted_requests_count_and_both_faces_share_the_count(
    client: httpx.AsyncClient,
) -> None:
    refused = [
        await post(client, "/llm/query", {"payload": {"provider": "mock"}}),  # 400: no messages
        await post(client, "/llm/query", klai(model="other")),  # 403: model
        await post(client, "/llm/query", klai(provider="openai")),  # 403: provider
        await post(client, "/llm/query", klai(apiKey="caller-provider-key-0123")),  # 403: key
        await post(client, "/v1/chat/completions", {"model": "mock/other", "messages": HI}),
        await post(client, "/v1/chat/completions", {"model": "mock/echo"}),  # 400: no messages
        await client.post("/llm/query", json=klai(), headers={"x-api-key": "wrong-key-0123"}),
    ]
    assert [r.status_code for r in refused] == [400, 403, 403, 403, 403, 400, 401]
    assert (await post(client, "/llm/query", klai(), "other")).status_code == 200
    assert (await post(client, "/llm/query", klai(), "other")).status_code == 429
    served = [
        await post(client, "/llm/query", klai()),
        await post(client, "/v1/chat/completions", {"model": "mock/echo", "messages": HI}),
    ]
    assert [r.status_code for r in served] == [200, 200], [r.text for r in served]
    over_klai = await post(client, "/stream/create", klai())
    over_face = await post(client, "/v1/chat/completions", {"model": "mock/echo", "messages": HI})
    assert (over_klai.status_code, over_face.status_code) == (429, 429)
    for r in (over_klai, over_face):
        assert r.headers["retry-after"] == "15", r.headers
    klai_error = over_klai.json()
    assert klai_error["success"] is False and klai_error["actionName"] == "onLlm"
    assert klai_error["error"]["type"] == "rate_limited" and klai_error["error"]["code"] == 429
    face_error = over_face.json()["error"]
    assert (face_error["type"], face_error["code"]) == ("rate_limit_error", "rate_limited")
