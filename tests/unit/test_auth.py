"""App keys, subscribe tokens, the `streamproxy token` CLI and secrets from Secrets Manager."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
from moto import mock_aws
from pydantic import ValidationError

from streaming_proxy.auth import AppRegistry, key_digest, presented_key
from streaming_proxy.config import AppConfig, Settings, load_settings
from streaming_proxy.errors import Forbidden, Unauthorized, ValidationFailed

SECRET = "a-token-secret-long-enough-for-hs256-keys"


def registry() -> AppRegistry:
    return AppRegistry(
        {
            "app1": AppConfig(keySha256=key_digest("key-one"), tokenSecret=SECRET),
            "app2": AppConfig(keySha256=key_digest("key-two"), tokenSecret=SECRET + "-2"),
        }
    )


def test_keys_authenticate_their_own_app_only() -> None:
    apps = registry()
    assert apps.authenticate("key-one").app_id == "app1"
    assert apps.authenticate("key-two").app_id == "app2"
    with pytest.raises(Unauthorized):
        apps.authenticate("key-three")
    with pytest.raises(Unauthorized, match="missing"):
        apps.authenticate(None)


def test_the_key_is_taken_from_body_then_bearer_then_x_api_key() -> None:
    assert presented_key("body", "Bearer header", "x") == "body"
    assert presented_key(None, "Bearer header", "x") == "header"
    assert presented_key(None, "Basic abc", "x") == "x"
    assert presented_key(None, None, None) is None


def test_a_token_grants_exactly_its_channels_until_it_expires() -> None:
    apps = registry()
    token, expires = apps.mint_token(apps.authenticate("key-one"), ["b", "a", "a"], 60)
    claims = apps.verify_token(token)
    assert claims.app_id == "app1" and claims.channels == {"a", "b"}
    assert claims.covers("a") and not claims.covers("c")
    assert expires == claims.expires_at


def test_expired_tampered_foreign_and_malformed_tokens_are_refused() -> None:
    apps = registry()
    app1 = apps.authenticate("key-one")
    old, _ = apps.mint_token(app1, ["a"], 10, now=time.time() - 3600)
    with pytest.raises(Unauthorized, match="expired"):
        apps.verify_token(old)
    good, _ = apps.mint_token(app1, ["a"], 60)
    header, payload, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    forged_payload = jwt.encode({**claims, "channels": ["a", "admin"]}, "g" * 32, algorithm="HS256")
    with pytest.raises(Forbidden):
        apps.verify_token(forged_payload)
    with pytest.raises(Forbidden):
        apps.verify_token(f"{header}.{payload}.{signature[::-1]}")
    other_app = jwt.encode({**claims, "app": "app9"}, SECRET, algorithm="HS256")
    with pytest.raises(Forbidden, match="unknown app"):
        apps.verify_token(other_app)
    with pytest.raises(Forbidden):
        apps.verify_token("not-a-jwt")
    with pytest.raises(Unauthorized):
        apps.verify_token(None)


def test_claims_nested_past_the_json_parsers_depth_are_refused_not_a_crash() -> None:
    def segment(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    deep = b"[" * 100_000 + b"]" * 100_000
    header = segment(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    token = f"{header}.{segment(deep)}.sig"
    with pytest.raises(Forbidden, match="malformed"):
        registry().verify_token(token)


def test_token_limits_are_enforced() -> None:
    apps = registry()
    app1 = apps.authenticate("key-one")
    with pytest.raises(ValidationFailed):
        apps.mint_token(app1, [], 60)
    with pytest.raises(ValidationFailed):
        apps.mint_token(app1, ["x" * 300], 60)
    with pytest.raises(ValidationFailed):
        apps.mint_token(app1, [f"c{i}" for i in range(101)], 60)


def test_cli_prints_a_token_the_app_registry_accepts() -> None:
    apps_env = json.dumps({"app1": {"keySha256": key_digest("key-one"), "tokenSecret": SECRET}})
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streaming_proxy.cli",
            "token",
            "--channel",
            "c1",
            "--channel",
            "c2",
            "--ttl",
            "120",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"APPS": apps_env, "PATH": ""},
    )
    claims = registry().verify_token(out.stdout.strip())
    assert claims.channels == {"c1", "c2"}
    assert 100 < claims.expires_at - time.time() <= 120


def test_cli_needs_a_channel() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streaming_proxy.cli", "token"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--channel" in out.stderr


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Secrets Manager client on moto, with the fake credentials settings load with."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def test_apps_and_provider_keys_come_from_secrets_manager(
    monkeypatch: pytest.MonkeyPatch, secrets: Any
) -> None:
    apps_arn = secrets.create_secret(
        Name="apps",
        SecretString=json.dumps({"app7": {"keySha256": key_digest("k7"), "tokenSecret": SECRET}}),
    )["ARN"]
    keys_arn = secrets.create_secret(
        Name="keys",
        SecretString=json.dumps({"OPENAI_API_KEY": "openai-key-from-secret", "NOT_A_KEY": "x"}),
    )["ARN"]
    monkeypatch.setenv("APPS_SECRET_ARN", apps_arn)
    monkeypatch.setenv("PROVIDER_KEYS_SECRET_ARN", keys_arn)
    settings = load_settings()
    assert AppRegistry.from_settings(settings).authenticate("k7").app_id == "app7"
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "openai-key-from-secret"
    assert "openai-key-from-secret" not in repr(settings)


def _app(**extra: Any) -> dict[str, Any]:
    return {"keySha256": key_digest("k"), "tokenSecret": SECRET, **extra}


HTTP_HOOK = {"toolWebhook": {"url": "http://tools.example.com/run", "secret": "s" * 32}}


@pytest.mark.parametrize(
    ("apps", "problem"),
    [
        # `#` separates the app id in table keys (CHANNEL#<app>#<channel>): never in an id.
        ({"a#b": _app()}, "app ids must match"),
        ({"": _app()}, "app ids must match"),
        ({"a" * 65: _app()}, "app ids must match"),
        ({"app1": _app(**HTTP_HOOK)}, "tool webhooks must be https://"),
    ],
)
def test_apps_that_could_cross_or_leak_are_refused_from_the_environment_and_the_secret(
    monkeypatch: pytest.MonkeyPatch, secrets: Any, apps: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        Settings(apps=apps)
    arn = secrets.create_secret(Name="apps", SecretString=json.dumps(apps))["ARN"]
    monkeypatch.setenv("APPS_SECRET_ARN", arn)
    with pytest.raises(ValueError, match=problem):
        load_settings()


def test_plain_http_webhooks_are_for_local_tests_only() -> None:
    settings = Settings(apps={"app1": _app(**HTTP_HOOK)}, allow_http_webhooks=True)
    hook = settings.apps["app1"].tool_webhook
    assert hook is not None and hook.url.startswith("http://")
