"""DevSettings: the local stack's embedded defaults (all overridable with DEV_* variables)."""

from __future__ import annotations

import json
import os

from pydantic_settings import BaseSettings, SettingsConfigDict

from streaming_proxy.auth import key_digest


class DevSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEV_", case_sensitive=False, extra="ignore")

    host: str = "127.0.0.1"
    http_port: int = 8080
    ws_port: int = 8081
    dynamodb_port: int = 8082
    app_id: str = "dev"
    api_key: str = "dev-key"
    token_secret: str = "dev-token-secret-not-for-production"
    table_name: str = "streaming-proxy-dev"
    stage: str = "dev"
    idle_timeout_seconds: float = 600.0
    max_age_seconds: float = 7200.0
    log_level: str = "WARNING"
    # More apps beside the dev one, as APPS would hold them (tests run two apps side by side).
    extra_apps: str = "{}"
    # Where the product reaches DynamoDB and @connections (default: the embedded ones);
    # chaos tests put a fault-injecting proxy there.
    product_dynamodb_url: str | None = None
    product_management_url: str | None = None
    # The gateway emulator and the embedded DynamoDB in a child process of their own
    # (benchmarks measure the app's CPU apart from them); off by default: one process is
    # simpler to run and to debug.
    gateway_process: bool = False
    # Each stream's EMF record on the stack's output, as Lambda writes it to CloudWatch
    # (off by default: one long JSON line per stream makes `make dev` hard to read).
    metrics: bool = False

    def apps_json(self) -> str:
        """The APPS value: the dev app (only its key's digest, never the key) and the extras."""
        apps = {
            self.app_id: {"keySha256": key_digest(self.api_key), "tokenSecret": self.token_secret}
        }
        apps.update(json.loads(self.extra_apps))
        return json.dumps(apps)

    def product_env(self) -> dict[str, str]:
        """Environment for the product code (streaming_proxy.config.Settings) in the stack."""
        return {
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "TABLE_NAME": self.table_name,
            "DYNAMODB_ENDPOINT_URL": self.product_dynamodb_url
            or f"http://{self.host}:{self.dynamodb_port}",
            "WS_MANAGEMENT_ENDPOINT": self.product_management_url
            or f"http://{self.host}:{self.ws_port}/{self.stage}",
            "APPS": self.apps_json(),
            "DETACH_MODE": "task",
            "DEMO_ENABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "false" if self.metrics else "true",
            "LOG_LEVEL": self.log_level,
            # GET /v1/models lists the mock unless the caller chose what to list.
            "MODELS": os.environ.get("MODELS", "mock/echo"),
        }
