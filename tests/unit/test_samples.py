"""The sample HTTP bodies in events/http-*.json stay valid requests, for the app and the doc."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from streaming_proxy.api.app import routes
from streaming_proxy.config import Settings
from streaming_proxy.contract import StopRequest, StreamRequest, TokenRequest
from streaming_proxy.jobs import StreamJob
from streaming_proxy.openai_format import ChatCompletionRequest, payload_of, split_model
from streaming_proxy.providers.registry import ProviderRegistry
from tests.unit.test_openapi import schema_errors

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"

# sample file -> (the route it is posted to, the model that route parses it with)
SAMPLES: dict[str, tuple[str, type[BaseModel]]] = {
    "http-llm-query-mock.json": ("/llm/query", StreamRequest),
    "http-llm-query-openai-tools.json": ("/llm/query", StreamRequest),
    "http-llm-query-anthropic.json": ("/llm/query", StreamRequest),
    "http-llm-query-gemini-native.json": ("/llm/query", StreamRequest),
    "http-llm-query-stream-false.json": ("/llm/query", StreamRequest),
    "http-chat-gemini.json": ("/stream/create", StreamRequest),
    "http-llm-query-stop.json": ("/llm/query/stop", StopRequest),
    "http-channels-token.json": ("/channels/token", TokenRequest),
    "http-chat-completions.json": ("/v1/chat/completions", ChatCompletionRequest),
}
SCHEMA_OF: dict[type[BaseModel], str] = {
    StreamRequest: "StreamRequest",
    StopRequest: "StopRequest",
    TokenRequest: "TokenRequest",
    ChatCompletionRequest: "ChatCompletionRequest",
}
PLACEHOLDER = re.compile(r"^YOUR_[A-Z_]+_KEY$")


def load(name: str) -> dict[str, Any]:
    data = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_every_sample_is_registered() -> None:
    on_disk = {path.name for path in EVENTS.glob("http-*.json")}
    assert on_disk == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_is_accepted_by_its_route_model(name: str) -> None:
    path, model = SAMPLES[name]
    assert path in {route.path for route in routes()}
    model.model_validate(load(name))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_keys_are_placeholders(name: str) -> None:
    def keys(node: Any) -> list[Any]:
        if isinstance(node, dict):
            found = [v for k, v in node.items() if k.lower() in ("apikey", "api_key")]
            return found + [k for v in node.values() for k in keys(v)]
        if isinstance(node, list):
            return [k for v in node for k in keys(v)]
        return []

    for key in keys(load(name)):
        assert isinstance(key, str) and PLACEHOLDER.match(key), f"{name}: {key!r}"
    # No provider key (OpenAI and Anthropic keys start with "sk" and a dash) in a sample.
    assert not re.search(r"\bsk[-]", (EVENTS / name).read_text(encoding="utf-8"))


def test_samples_cover_their_scenarios() -> None:
    mock = StreamRequest.model_validate(load("http-llm-query-mock.json"))
    assert mock.payload.provider == "mock" and mock.payload.stream
    tools = StreamRequest.model_validate(load("http-llm-query-openai-tools.json"))
    assert tools.payload.provider == "openai" and tools.payload.tools
    assert tools.payload.tool_choice is not None
    gemini = StreamRequest.model_validate(load("http-chat-gemini.json"))
    assert gemini.payload.provider == "gemini" and gemini.payload.generation_config
    anthropic = StreamRequest.model_validate(load("http-llm-query-anthropic.json"))
    assert anthropic.payload.provider == "anthropic"
    complete = StreamRequest.model_validate(load("http-llm-query-stream-false.json"))
    assert complete.payload.stream is False and complete.channels == []
    face = ChatCompletionRequest.model_validate(load("http-chat-completions.json"))
    assert face.stream and face.channels and face.action_name


# -- the samples against the OpenAPI schemas --


def doc_errors(schema_name: str, body: Any) -> list[str]:
    """What the OpenAPI request schema finds wrong with `body` (JSON Schema 2020-12)."""
    return schema_errors({"$ref": f"#/components/schemas/{schema_name}"}, body)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_matches_the_openapi_schema(name: str) -> None:
    _, model = SAMPLES[name]
    assert doc_errors(SCHEMA_OF[model], load(name)) == []


def variants() -> list[tuple[str, dict[str, Any]]]:
    """Bodies around the edges of StreamRequest's rules, valid and invalid."""
    base = load("http-llm-query-mock.json")
    cases: list[tuple[str, dict[str, Any]]] = [("as is", base)]

    def changed(label: str, change: Any) -> None:
        body = copy.deepcopy(base)
        change(body)
        cases.append((label, body))

    changed("no channels", lambda b: b.pop("channels"))
    changed("empty channels", lambda b: b.update(channels=[]))
    changed("no actionName", lambda b: b.pop("actionName"))
    changed("stream omitted", lambda b: b["payload"].pop("stream"))
    changed(
        "stream false, no targets",
        lambda b: (b.pop("channels"), b.pop("actionName"), b["payload"].update(stream=False)),
    )
    changed("flush too large", lambda b: b["options"].update(flushIntervalMs=5000))
    changed("flush negative", lambda b: b["options"].update(flushIntervalMs=-1))
    changed("flush off", lambda b: b["options"].update(flushIntervalMs=0))
    changed("no messages", lambda b: b["payload"].update(messages=[]))
    changed("no payload", lambda b: b.pop("payload"))
    changed("bad role", lambda b: b["payload"]["messages"][0].update(role="robot"))
    changed("long actionName", lambda b: b.update(actionName="a" * 201))
    return cases


@pytest.mark.parametrize(("label", "body"), variants(), ids=[label for label, _ in variants()])
def test_the_doc_and_the_model_agree_on_the_edges(label: str, body: dict[str, Any]) -> None:
    try:
        StreamRequest.model_validate(body)
        model_accepts = True
    except ValidationError:
        model_accepts = False
    assert (doc_errors("StreamRequest", body) == []) == model_accepts, label


# -- the provider checks that run before anything is published (400s) --


def server_settings() -> Settings:
    """Settings holding provider keys, as a deployment has them (placeholders: no call is made)."""
    key = SecretStr("server-held-placeholder")
    return Settings(openai_api_key=key, anthropic_api_key=key, gemini_api_key=key)


STREAM_SAMPLES = sorted(name for name, (_, model) in SAMPLES.items() if model is StreamRequest)


@pytest.mark.parametrize("name", STREAM_SAMPLES)
async def test_stream_sample_passes_its_providers_checks(name: str) -> None:
    body = StreamRequest.model_validate(load(name))
    job = StreamJob(
        stream_id="st_sample",
        app_id="app",
        kind="chat" if SAMPLES[name][0] == "/stream/create" else "llm",
        action_name=body.action_name or "",
        channels=body.channels,
        payload=body.payload,
        flush_interval_ms=40,
    )
    async with httpx.AsyncClient() as http:
        ProviderRegistry(server_settings(), http).resolve(job.provider).prepare(job.llm_request)


async def test_chat_completions_sample_passes_its_providers_checks() -> None:
    body = ChatCompletionRequest.model_validate(load("http-chat-completions.json"))
    async with httpx.AsyncClient() as http:
        registry = ProviderRegistry(server_settings(), http)
        provider, model = split_model(body.model, registry.names(), "openai")
        assert provider == "anthropic"
        payload = payload_of(body, provider, model, registry.speaks_openai(provider))
        assert (payload.model_extra or {})["max_tokens"] == 300
        job = StreamJob(
            stream_id="st_sample",
            app_id="app",
            kind="openai",
            action_name=body.action_name or "",
            channels=body.channels,
            payload=payload,
            flush_interval_ms=40,
        )
        registry.resolve(provider).prepare(job.llm_request)
        assert job.llm_request.sampling.max_tokens == 300
