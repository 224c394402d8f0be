"""An app's policy (policy.py): the models map (pinned or allow-list, `*` prefixes, providers
left out) and `allowClientProviderKey`, plus how the app entry validates them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from streaming_proxy.api.app import create_app
from streaming_proxy.auth import key_digest
from streaming_proxy.config import AppConfig, Settings
from streaming_proxy.contract import Payload
from streaming_proxy.errors import ModelNotAllowed, ProviderKeyRefused, ValidationFailed
from streaming_proxy.jobs import StreamJob, StreamKind
from streaming_proxy.policy import apply_policy, matches, named_models
from streaming_proxy.service import StreamService
from tests.unit.conftest import MOTO_TABLE

DIGEST = "0" * 64
SECRET = "s" * 32


def app(**governance: Any) -> AppConfig:
    return AppConfig.model_validate({"keySha256": DIGEST, "tokenSecret": SECRET, **governance})


def job(kind: StreamKind = "llm", **payload: Any) -> StreamJob:
    fields = {"provider": "openai", "messages": [{"role": "user", "content": "hi"}], **payload}
    return StreamJob(
        stream_id="st_policy",
        app_id="a",
        kind=kind,
        action_name="onLlm",
        payload=Payload.model_validate(fields),
        flush_interval_ms=0,
    )


GOVERNED = app(models={"openai": ["gpt-4o-mini", "gpt-4.1*"], "anthropic": "claude-x"})


def test_an_app_without_governance_allows_every_provider_model_and_key() -> None:
    request = job(model="anything", apiKey="caller-key-1234")
    apply_policy("a", app(), request)
    assert request.payload.model == "anything"
    assert request.llm_request.api_key is not None


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"])
def test_listed_names_and_prefixes_are_allowed(model: str) -> None:
    request = job(model=model)
    apply_policy("a", GOVERNED, request)
    assert request.payload.model == model


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini-2", "gpt-4", "GPT-4O-MINI"])
def test_other_names_are_refused_with_403_naming_the_list(model: str) -> None:
    with pytest.raises(ModelNotAllowed) as raised:
        apply_policy("a", GOVERNED, job(model=model))
    assert raised.value.status == 403
    assert "gpt-4o-mini, gpt-4.1*" in raised.value.message
    assert raised.value.fields[0]["field"] == "payload.model"


def test_a_list_needs_the_request_to_name_its_model() -> None:
    with pytest.raises(ValidationFailed) as raised:
        apply_policy("a", GOVERNED, job())
    assert raised.value.status == 400 and raised.value.fields[0]["field"] == "payload.model"


def test_a_pinned_model_is_filled_in_before_the_provider_request_is_built() -> None:
    request = job(provider="anthropic")
    apply_policy("a", GOVERNED, request)
    assert request.llm_request.model == "claude-x"
    same = job(provider="anthropic", model="claude-x")
    apply_policy("a", GOVERNED, same)
    assert same.payload.model == "claude-x"


def test_a_pinned_model_refuses_any_other() -> None:
    with pytest.raises(ModelNotAllowed, match="pinned to anthropic model 'claude-x', not 'c2'"):
        apply_policy("a", GOVERNED, job(provider="anthropic", model="c2"))


def test_a_provider_left_out_of_the_map_is_refused() -> None:
    with pytest.raises(ModelNotAllowed) as raised:
        apply_policy("a", GOVERNED, job(provider="gemini", model="gemini-2.5-flash"))
    assert "may not use provider 'gemini'" in raised.value.message
    assert raised.value.fields[0]["field"] == "payload.provider"


def test_the_openai_face_names_its_own_fields() -> None:
    with pytest.raises(ModelNotAllowed) as raised:
        apply_policy("a", GOVERNED, job("openai", provider="gemini", model="g"))
    assert raised.value.fields[0]["field"] == "model"


def test_a_star_alone_allows_every_model_of_its_provider() -> None:
    assert matches("*", "anything") and matches("gpt-*", "gpt-5") and not matches("gpt-*", "o3")
    request = job(model="o3")
    apply_policy("a", app(models={"openai": ["*"]}), request)
    assert request.payload.model == "o3"


@pytest.mark.parametrize(
    "model", ["openai/gpt-4o@preset/any", "openai/gpt-4o-mini@Preset/x", "@preset/x"]
)
def test_a_prefix_never_admits_an_openrouter_preset_which_may_run_any_model(model: str) -> None:
    governed = app(models={"openrouter": ["openai/gpt-4o*", "@preset/chosen"]})
    with pytest.raises(ModelNotAllowed):
        apply_policy("a", governed, job(provider="openrouter", model=model))
    for allowed in ("openai/gpt-4o-mini", "@preset/chosen"):  # an exact entry vouches for it
        request = job(provider="openrouter", model=allowed)
        apply_policy("a", governed, request)
        assert request.payload.model == allowed
    assert matches("*", model)  # `*` allows any model, a preset's included


def test_named_models_lists_every_model_the_provider_args_name_with_its_field() -> None:
    args = {
        "model": "a",
        "models": ["b", "c"],
        "fallbacks": ["d", {"model": "e", "messages": []}],
        "route": "fallback",
        "temperature": 0.2,
    }
    assert list(named_models(args, "payload.providerArgs.")) == [
        ("payload.providerArgs.model", "a"),
        ("payload.providerArgs.models[0]", "b"),
        ("payload.providerArgs.models[1]", "c"),
        ("payload.providerArgs.fallbacks[0]", "d"),
        ("payload.providerArgs.fallbacks[1].model", "e"),
    ]
    # /v1: its unknown fields are top-level body fields; `model` there is the body's own.
    assert list(named_models({"model": "a", "models": ["b"]}, "")) == [
        ("providerArgs.model", "a"),
        ("models[0]", "b"),
    ]
    assert list(named_models({"models": None, "preset": None, "route": None}, "")) == []


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        ({"preset": "p"}, ModelNotAllowed),
        ({"route": "fallback"}, ModelNotAllowed),
        ({"route": "fallback", "models": []}, ModelNotAllowed),
        ({"models": "gpt-4o-mini"}, ValidationFailed),
        ({"models": [3]}, ValidationFailed),
        ({"fallbacks": [{"gpt-4o-mini": ["gpt-4o"]}]}, ValidationFailed),
        ({"model": ""}, ValidationFailed),
    ],
)
def test_args_that_let_the_gateway_choose_or_cannot_be_read_are_refused(
    args: dict[str, Any], refused: type[Exception]
) -> None:
    with pytest.raises(refused):
        list(named_models(args, "p."))


def test_provider_args_models_are_held_to_the_map_only_when_there_is_one() -> None:
    outside = {"models": ["gpt-4o-mini", "gpt-4o"]}
    with pytest.raises(ModelNotAllowed) as raised:
        apply_policy("a", GOVERNED, job(model="gpt-4o-mini", providerArgs=outside))
    assert raised.value.fields[0]["field"] == "payload.providerArgs.models[1]"
    with pytest.raises(ModelNotAllowed, match="pinned to anthropic model 'claude-x', not 'c2'"):
        apply_policy("a", GOVERNED, job(provider="anthropic", providerArgs={"model": "c2"}))
    inside = job(model="gpt-4o-mini", providerArgs={"models": ["gpt-4.1-mini"]})
    apply_policy("a", GOVERNED, inside)
    assert inside.llm_request.provider_args == {"models": ["gpt-4.1-mini"]}
    apply_policy("a", app(), job(model="m", providerArgs={**outside, "preset": "p"}))


def test_client_provider_keys_are_refused_when_the_app_says_so() -> None:
    strict = app(allowClientProviderKey=False)
    with pytest.raises(ProviderKeyRefused) as raised:
        apply_policy("a", strict, job(model="m", apiKey="caller-key-1234"))
    assert raised.value.status == 403 and raised.value.kind == "provider_key_refused"
    assert raised.value.fields == [
        {"field": "payload.apiKey", "message": "not allowed for this app"}
    ]
    apply_policy("a", strict, job(model="m"))  # without a key: served with the server's


@pytest.mark.parametrize(
    "governance",
    [
        {"models": {}},
        {"models": {"openai": []}},
        {"models": {"openai": ""}},
        {"models": {"openai": "gpt-*"}},
        {"models": {"openai": ["g*pt"]}},
        {"rateLimit": 0},
        {"tokenQuota": -1},
        {"allowClientProviderKey": "sometimes"},
    ],
)
def test_malformed_governance_fails_the_app_entry(governance: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        app(**governance)


async def test_v1_models_lists_only_what_the_calling_app_may_use(aws_env: None) -> None:
    keys = {"open": "open-app-key-for-policy-tests", "strict": "strict-app-key-for-policy"}
    apps = {
        "open": app(keySha256=key_digest(keys["open"])),
        "strict": app(
            keySha256=key_digest(keys["strict"]),
            models={"openai": ["gpt-4.1*", "o3"], "anthropic": "claude-x"},
        ),
    }
    service = StreamService(
        Settings(
            table_name=MOTO_TABLE,
            apps=apps,
            openai_api_key=SecretStr("server-key-for-listing"),
            anthropic_api_key=SecretStr("server-key-for-listing"),
            models={
                "openai": ["gpt-4o-mini", "gpt-4.1-mini", "o3"],
                "anthropic": ["claude-y"],
            },
        )
    )
    server = create_app()
    server.state.service = service
    listed: dict[str, list[str]] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=server), base_url="http://x"
    ) as c:
        for app_id, key in keys.items():
            r = await c.get("/v1/models", headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
            listed[app_id] = [model["id"] for model in r.json()["data"]]
    await service.aclose()
    assert listed["open"] == [
        "openai/gpt-4o-mini",
        "openai/gpt-4.1-mini",
        "openai/o3",
        "anthropic/claude-y",
    ]
    assert listed["strict"] == ["openai/gpt-4.1-mini", "openai/o3"]
