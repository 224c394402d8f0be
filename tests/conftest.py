"""Shared fixtures: the real local stack (`python -m devstack`) on free loopback ports."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from moto.core.botocore_stubber import BotocoreStubber

from devstack.process import StackProcess, start_stack
from streaming_proxy.auth import key_digest
from tests.fake_llm import FakeLlm
from tests.fake_webhook import WEBHOOK_SECRET, FakeWebhook

ROOT = Path(__file__).resolve().parent.parent


Stack = StackProcess


@asynccontextmanager
async def sse_query(
    stack: Stack, body: dict[str, Any], path: str = "/llm/query"
) -> AsyncIterator[httpx.Response]:
    """`path` POSTed with the app key, asking for SSE: the streaming answer."""
    headers = {"x-api-key": stack.api_key, "accept": "text/event-stream"}
    async with (
        httpx.AsyncClient(base_url=stack.http, timeout=30) as client,
        client.stream("POST", path, json=body, headers=headers) as answer,
    ):
        yield answer


async def app_post(stack: Stack, path: str, json_body: Any, **headers: str) -> httpx.Response:
    """`path` POSTed with the app key (and `headers`): the whole answer."""
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        return await client.post(
            path, json=json_body, headers={"x-api-key": stack.api_key, **headers}
        )


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Async tests run on uvloop, the event loop of the stream function (run.sh) and of the
    local stack: code that assumes asyncio's own transports or loop fails here too."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True, scope="session")
def moto_one_request_at_a_time() -> Iterator[None]:
    """moto in-process (`mock_aws`) answers one AWS call at a time, as the embedded
    DynamoDB does (devstack.dynamodb.OneAtATime). DynamoDB applies a conditional write
    atomically; moto checks the condition and writes in separate steps, unlocked, so two
    threads (the product's `asyncio.to_thread` store calls) could both pass a condition
    only one may pass, such as two deliveries of one detached job both claiming it."""
    lock = threading.Lock()
    unlocked = BotocoreStubber.process_request

    def one_at_a_time(self: BotocoreStubber, request: Any) -> Any:
        with lock:
            return unlocked(self, request)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BotocoreStubber, "process_request", one_at_a_time)
        yield


# Fake provider keys the stack holds; tests check they never reach the logs.
FAKE_OPENAI_KEY = "fake-openai-server-key-0123456789"
FAKE_ANTHROPIC_KEY = "fake-anthropic-server-key-0123456789"
FAKE_COMPAT_KEY = "fake-compat-endpoint-key-0123456789"
FAKE_AZURE_KEY = "fake-azure-server-key-0123456789"
# A second app beside the dev one, with the same channel names: nothing may cross.
RIVAL_APP = "rival"
RIVAL_KEY = "rival-app-key-for-isolation-tests"
RIVAL_APPS = {
    RIVAL_APP: {
        "keySha256": key_digest(RIVAL_KEY),
        "tokenSecret": "rival-token-secret-not-for-production",
    }
}
# USD per million tokens the stack prices streams at (PRICES): one model, so that the
# others show that a model without a price reports no cost.
PRICES = {"openai": {"fake-text": {"input": 2.5, "output": 10.0}}}
# A third app, whose backend tools run on the fake webhook (tests/fake_webhook.py).
HOOKED_APP = "hooked"
HOOKED_KEY = "hooked-app-key-for-tool-tests"
# Apps with governance (policy.py, limits.py), each key `<app>-app-key-for-governance-tests`:
# a models allow-list without client provider keys, a rate limit, a token quota, and two
# whose limit one request reaches (the error-shape tables provoke their 429s).
GOVERNED_APPS: dict[str, dict[str, Any]] = {
    "governed": {
        "models": {"openai": ["fake-text", "fake-tool*"], "anthropic": "fake-text"},
        "allowClientProviderKey": False,
    },
    "metered": {"rateLimit": 5},
    "quota": {"tokenQuota": 100},
    "hasty": {"rateLimit": 1},
    "spent": {"tokenQuota": 1},
    # Named assistants: a small store, and one that concurrent creates race for.
    "capped": {"maxAssistants": 3},
    "crowded": {"maxAssistants": 5},
}


def governed_key(app_id: str) -> str:
    return f"{app_id}-app-key-for-governance-tests"


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLlm]:
    """A fake OpenAI/Anthropic/Gemini-format upstream on loopback."""
    server = FakeLlm()
    server.start()
    try:
        yield server
    finally:
        server.stop()


CONFIGURED_KEYS = (
    FAKE_OPENAI_KEY,
    FAKE_ANTHROPIC_KEY,
    FAKE_COMPAT_KEY,
    FAKE_AZURE_KEY,
    RIVAL_KEY,
    HOOKED_KEY,
    WEBHOOK_SECRET,
    *(governed_key(app_id) for app_id in GOVERNED_APPS),
)


def assert_no_keys_in(log: str) -> None:
    """No provider key, COMPAT_ENDPOINTS key or app key the stack holds is in `log`."""
    leaked = [key for key in CONFIGURED_KEYS if key in log]
    assert not leaked, f"configured keys in the stack's log: {[k[:12] + '...' for k in leaked]}"


@pytest.fixture(scope="session")
def webhook() -> Iterator[FakeWebhook]:
    """The backend-tools webhook of HOOKED_APP, on loopback."""
    server = FakeWebhook()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def stack_env(fake_llm: FakeLlm, webhook: FakeWebhook | None = None) -> dict[str, str]:
    """The openai and anthropic providers and a compatible endpoint `fakecompat` pointed at
    the fake upstream with fake server keys, bedrock's runtime endpoint at it too, gemini
    pointed at it without a key (requests bring their own `payload.apiKey`), a second app
    (RIVAL_APP) beside the dev one, the GOVERNED_APPS and, with `webhook`, a third
    (HOOKED_APP) whose backend tools run there."""
    apps: dict[str, Any] = dict(RIVAL_APPS)
    for app_id, governance in GOVERNED_APPS.items():
        apps[app_id] = {
            "keySha256": key_digest(governed_key(app_id)),
            "tokenSecret": f"{app_id}-token-secret-not-for-production",
            **governance,
        }
    if webhook is not None:
        apps[HOOKED_APP] = {
            "keySha256": key_digest(HOOKED_KEY),
            "tokenSecret": "hooked-token-secret-not-for-production",
            "toolWebhook": {"url": webhook.url, "secret": WEBHOOK_SECRET},
        }
    return {
        "OPENAI_BASE_URL": fake_llm.base_url,
        "OPENAI_API_KEY": FAKE_OPENAI_KEY,
        "ANTHROPIC_BASE_URL": fake_llm.base_url,
        "ANTHROPIC_API_KEY": FAKE_ANTHROPIC_KEY,
        "GEMINI_BASE_URL": fake_llm.gemini_base_url,
        "AZURE_OPENAI_ENDPOINT": fake_llm.base_url.removesuffix("/v1"),
        "AZURE_OPENAI_API_KEY": FAKE_AZURE_KEY,
        # boto3 signs with the stack's local credentials and talks to the fake's Bedrock route.
        "BEDROCK_ENDPOINT_URL": fake_llm.base_url.removesuffix("/v1"),
        "BEDROCK_REGION": "us-east-1",
        "DEV_EXTRA_APPS": json.dumps(apps),
        "COMPAT_ENDPOINTS": json.dumps(
            {"fakecompat": {"baseUrl": fake_llm.base_url, "apiKey": FAKE_COMPAT_KEY}}
        ),
        # What GET /v1/models lists; gemini has no server key here, so it is not listed.
        "MODELS": json.dumps(
            {
                "openai": ["gpt-4o-mini"],
                "anthropic": ["claude-sonnet-4-5"],
                "gemini": ["gemini-2.5-flash"],
                "fakecompat": ["llama3"],
                "mock": ["echo"],
            }
        ),
        # Each stream's EMF record in the log, and a price for the fake OpenAI text model
        # (tests/integration/test_stream_analytics.py).
        "DEV_METRICS": "true",
        "PRICES": json.dumps(PRICES),
        # The fake webhook is plain http on loopback; it answers slow_tool after 3 s.
        "ALLOW_HTTP_WEBHOOKS": "true",
        "TOOL_WEBHOOK_TIMEOUT_SECONDS": "1",
    }


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLlm, webhook: FakeWebhook
) -> Iterator[Stack]:
    """One running local stack for the session (real HTTP, real WebSocket, moto DynamoDB),
    with the providers and apps of `stack_env`."""
    running = start_stack(tmp_path_factory.mktemp("stack"), stack_env(fake_llm, webhook))
    try:
        yield running
    finally:
        running.stop()
    # Every test that made a provider fail ran here: no configured key may be in the log.
    assert_no_keys_in(running.logs())
