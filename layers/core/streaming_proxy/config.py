"""Settings: every environment variable the proxy reads, in one typed object."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .prices import PriceTable


class ToolWebhook(BaseModel):
    """Where an app's backend tools run: the proxy POSTs each call there, HMAC-signed."""

    url: str = Field(pattern=r"^https?://[^\s]+$")
    secret: SecretStr = Field(min_length=32)


# One provider's entry of an app's `models`: a pinned model (a string) or an allow-list
# of names, each exact or ending in `*` (a prefix; `*` alone: any model).
ModelName = Annotated[str, Field(min_length=1, max_length=200)]
ModelRule = ModelName | Annotated[list[ModelName], Field(min_length=1)]


class AppConfig(BaseModel):
    """One calling application: the SHA-256 of its key (never the key), its token secret and,
    optionally, the webhook its backend tools run on and its governance (policy.py and
    limits.py): the models it may use, whether callers may bring provider keys, requests
    per minute, tokens per day and how many named assistants it may store."""

    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", alias="keySha256")
    token_secret: SecretStr = Field(min_length=32, alias="tokenSecret")
    tool_webhook: ToolWebhook | None = Field(default=None, alias="toolWebhook")
    # Per provider; a provider not named is refused once the map is set.
    models: dict[str, ModelRule] | None = Field(default=None, min_length=1)
    allow_client_provider_key: bool = Field(default=True, alias="allowClientProviderKey")
    rate_limit: int | None = Field(default=None, ge=1, alias="rateLimit")
    token_quota: int | None = Field(default=None, ge=1, alias="tokenQuota")
    # Named assistants it may store; MAX_ASSISTANTS_PER_APP when not set.
    max_assistants: int | None = Field(default=None, ge=0, le=100_000, alias="maxAssistants")

    # A field it does not know (a misspelled `ratelimit`) fails the entry: ignored, it
    # would run the app without the limit its operator set.
    model_config = {"populate_by_name": True, "extra": "forbid"}

    @field_validator("models")
    @classmethod
    def _model_patterns(cls, models: dict[str, str | list[str]] | None) -> Any:
        for provider, rule in (models or {}).items():
            if isinstance(rule, str) and "*" in rule:
                raise ValueError(f"models.{provider}: a pinned model is one exact name")
            names = rule if isinstance(rule, list) else []
            if any("*" in name[:-1] for name in names):
                raise ValueError(f"models.{provider}: '*' may only end a name (a prefix)")
        return models


# Posts in flight per process; each boto3 post thread keeps a pooled connection of its own.
MAX_POST_CONCURRENCY = 1024

# App ids are part of table keys (`CHANNEL#<app>#<channel>`): no '#', no spaces.
APP_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CompatEndpoint(BaseModel):
    """A named OpenAI-compatible endpoint (Ollama, vLLM, Groq, Mistral, OpenRouter, ...)."""

    base_url: str = Field(alias="baseUrl")
    api_key: SecretStr | None = Field(default=None, alias="apiKey")

    model_config = {"populate_by_name": True}


class Settings(BaseSettings):
    """Environment variable names match template.yaml and devstack exactly."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    # AWS wiring
    aws_region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    table_name: str = "streaming-proxy"
    dynamodb_endpoint_url: str | None = None
    ws_management_endpoint: str | None = None
    self_function_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SELF_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_NAME"),
    )
    detach_mode: Literal["task", "lambda"] = "task"

    # Apps and secrets
    apps: dict[str, AppConfig] = Field(default_factory=dict)
    apps_secret_arn: str | None = None
    provider_keys_secret_arn: str | None = None
    # Browser origins allowed to open WebSockets and to call the page routes (api/pagecors.py).
    # Comma-separated in the environment (ALLOWED_ORIGINS="https://a.example,https://b.example").
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    demo_enabled: bool = False
    max_channels_per_request: int = Field(default=50, ge=1, le=1000)

    # Providers (base URLs and server-held keys come from here only, never from a request)
    default_provider: str = "openai"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com/v1"
    anthropic_api_key: SecretStr | None = None
    anthropic_version: str = "2023-06-01"
    gemini_base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    gemini_api_key: SecretStr | None = None
    azure_openai_endpoint: str | None = None
    azure_openai_api_key: SecretStr | None = None
    azure_openai_api_version: str = "2024-10-21"
    bedrock_region: str | None = None
    # Regions a request may pick with providerArgs.region besides BEDROCK_REGION (comma list).
    # `lambda: []`, not `list`: cheaper at import (docs/architecture.md decision 31).
    bedrock_allowed_regions: Annotated[list[str], NoDecode] = Field(default_factory=lambda: [])
    bedrock_endpoint_url: str | None = None
    compat_endpoints: dict[str, CompatEndpoint] = Field(default_factory=dict)
    # What `GET /v1/models` lists, per provider: a JSON object {"openai": ["gpt-4o-mini"]}
    # or a comma list of provider/model ("openai/gpt-4o-mini,anthropic/claude-sonnet-4-5").
    models: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
    connect_timeout_seconds: float = 10.0
    # Image URLs fetched for providers that take only bytes (providers/images.py). The
    # timeout stays under ACK_WAIT_SECONDS, so a failed fetch is the caller's 400.
    image_fetch_timeout_seconds: float = Field(default=4.0, gt=0, le=60)
    image_max_bytes: int = Field(default=5_242_880, ge=1024, le=20_971_520)
    # Loopback and private addresses for image URLs: local tests only, never a deployment.
    allow_private_image_urls: bool = False

    # Streaming behaviour
    max_body_bytes: int = 1_048_576
    # The channels' coalescing window, and how wide it may grow while the fan-out is behind.
    flush_interval_ms: int = Field(default=20, ge=0, le=1000)
    max_flush_interval_ms: int = Field(default=1000, ge=0, le=5000)
    idle_timeout_seconds: float = 60.0
    total_timeout_seconds: float = 840.0
    keepalive_seconds: float = 10.0
    ack_wait_seconds: float = 5.0
    member_refresh_seconds: float = 1.0
    cancel_poll_seconds: float = 0.5
    # A detached relay's heartbeat on its record (Lambda mode): the dead-letter handler
    # leaves a stream whose relay still beats alone (architecture.md, decision 46).
    heartbeat_seconds: float = Field(default=10.0, ge=1, le=60)
    snapshot_interval_seconds: float = 1.0
    drain_timeout_seconds: float = 10.0
    # How posts reach @connections: SigV4-signed on keep-alive connections (signed_poster.py),
    # or boto3 on threads of its own.
    poster: Literal["signed", "boto3"] = "signed"
    post_concurrency: int = Field(default=32, ge=4, le=MAX_POST_CONCURRENCY)
    post_max_retries: int = 5
    post_timeout_seconds: float = 3.0
    db_concurrency: int = 16
    final_write_attempts: int = 5

    # Tool loop
    max_tool_rounds: int = Field(default=8, ge=0, le=32)
    tool_timeout_seconds: float = Field(default=90.0, ge=1, le=300)
    tool_webhook_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    tool_answer_max_bytes: int = Field(default=65_536, ge=1024)
    # Webhooks must be https; local tests may allow http (never in a deployment).
    allow_http_webhooks: bool = False

    # Lifetimes
    connection_ttl_seconds: int = 7200
    stream_ttl_seconds: int = 86_400
    token_default_ttl_seconds: int = 3600
    token_max_ttl_seconds: int = 86_400

    # Threads (threads.py): kept this many days after their last run; the history a run
    # sends is trimmed to a token budget (estimated), per model when named here.
    thread_ttl_days: int = Field(default=30, ge=1, le=3650)
    thread_context_tokens: int = Field(default=16_000, ge=256)
    thread_context_tokens_by_model: dict[str, Annotated[int, Field(ge=256)]] = Field(
        default_factory=dict
    )

    # Named assistants (assistants.py) one app may store; creating one more is a 409.
    max_assistants_per_app: int = Field(default=1000, ge=1, le=100_000)

    # The log level is not a setting: the logger exists before Settings do
    # (observability.get_logger reads LOG_LEVEL / POWERTOOLS_LOG_LEVEL itself).
    # USD per million tokens per provider and model, for each stream's estimated cost
    # (prices.py): {"openai": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}}. Empty: no cost.
    prices: PriceTable = Field(default_factory=dict)

    def secret_values(self) -> list[SecretStr]:
        """Every secret this configuration holds (redact.py keeps them out of all output)."""
        keys = [getattr(self, name) for name in type(self).model_fields if name.endswith("_key")]
        keys += [endpoint.api_key for endpoint in self.compat_endpoints.values()]
        keys += [app.token_secret for app in self.apps.values()]
        keys += [app.tool_webhook.secret for app in self.apps.values() if app.tool_webhook]
        return [key for key in keys if isinstance(key, SecretStr)]

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()] or ["*"]
        return value

    @field_validator("bedrock_allowed_regions", mode="before")
    @classmethod
    def _split_regions(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.strip().startswith("{"):
            return json.loads(value)
        models: dict[str, list[str]] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            provider, sep, model = item.partition("/")
            if not sep or not provider or not model:
                raise ValueError(f"MODELS entries must be provider/model, not {item!r}")
            models.setdefault(provider, []).append(model)
        return models

    @field_validator("apps")
    @classmethod
    def _app_ids(cls, apps: dict[str, AppConfig]) -> dict[str, AppConfig]:
        bad = [app_id for app_id in apps if not APP_ID.match(app_id)]
        if bad:
            raise ValueError(f"app ids must match {APP_ID.pattern}: {bad}")
        # A key is who the caller is: two apps with one key would both be the last of them.
        by_key: dict[str, list[str]] = {}
        for app_id, app in apps.items():
            by_key.setdefault(app.key_sha256, []).append(app_id)
        shared = [sorted(ids) for ids in by_key.values() if len(ids) > 1]
        if shared:
            raise ValueError(f"apps {shared[0]} share one key: each app needs its own")
        return apps

    @model_validator(mode="after")
    def _webhooks_are_https(self) -> Settings:
        """Tool webhooks carry tool calls (and their arguments) out of AWS: https only,
        unless ALLOW_HTTP_WEBHOOKS is set (local tests)."""
        plain = [
            app_id
            for app_id, app in self.apps.items()
            if app.tool_webhook and not app.tool_webhook.url.startswith("https://")
        ]
        if plain and not self.allow_http_webhooks:
            raise ValueError(f"tool webhooks must be https:// (apps {plain})")
        return self


def _secret_json(arn: str, region: str) -> dict[str, Any]:
    from .aws import secretsmanager  # aws.py imports this module

    value = secretsmanager(region).get_secret_value(SecretId=arn)["SecretString"]
    data = json.loads(value)
    if not isinstance(data, dict):
        raise ValueError(f"secret {arn} must hold a JSON object")
    return data


def load_settings() -> Settings:
    """Read the environment, then overlay the JSON of any configured Secrets Manager secrets.

    APPS_SECRET_ARN holds `{"<appId>": {"keySha256": ..., "tokenSecret": ...}}`;
    PROVIDER_KEYS_SECRET_ARN holds `{"OPENAI_API_KEY": ..., "ANTHROPIC_API_KEY": ...}`.
    """
    settings = Settings()
    updates: dict[str, Any] = {}
    if settings.apps_secret_arn:
        apps = _secret_json(settings.apps_secret_arn, settings.aws_region)
        updates["apps"] = {
            **settings.apps,
            **{k: AppConfig.model_validate(v) for k, v in apps.items()},
        }
    if settings.provider_keys_secret_arn:
        keys = _secret_json(settings.provider_keys_secret_arn, settings.aws_region)
        for name, value in keys.items():
            field = name.lower()
            if field in Settings.model_fields and field.endswith("_api_key"):
                updates[field] = SecretStr(str(value))
    # Built again rather than copied, so values from the secrets meet every validator.
    return Settings(**updates) if updates else settings


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
