"""An app's policy on what a request may ask for: providers, models and provider keys.

Applied before anything is published (`StreamService.check`). `models` maps a provider to a
pinned model (a string: a request without a model gets it, one naming another is refused,
as Kong's AI Proxy does) or to an allow-list (exact names, or a prefix ending in `*`; `*`
alone allows any model of that provider). Once the map is set, a provider it does not name
is refused.
"""

from __future__ import annotations

from .config import AppConfig
from .errors import ModelNotAllowed, ProviderKeyRefused, ValidationFailed
from .jobs import StreamJob


def apply_policy(app_id: str, app: AppConfig, job: StreamJob) -> None:
    """Refuse what the app's entry does not allow (403, or 400 for a model left out where a
    list must choose); fill in a pinned model. Call before `job.llm_request` is built."""
    prefix = "" if job.kind == "openai" else "payload."
    if not app.allow_client_provider_key and job.payload.api_key is not None:
        raise ProviderKeyRefused(
            f"app '{app_id}' may not send provider keys: leave out {prefix}apiKey "
            "(the proxy uses its own key for the provider)",
            fields=[{"field": prefix + "apiKey", "message": "not allowed for this app"}],
        )
    if app.models is not None:
        job.payload.model = allowed_model(app_id, app, job.provider, job.payload.model, prefix)


def allowed_model(
    app_id: str, app: AppConfig, provider: str, model: str | None, prefix: str = "payload."
) -> str:
    """The model the request runs with under `app.models`, or the error refusing it."""
    rules = app.models or {}
    field = prefix + "model"
    rule = rules.get(provider)
    if rule is None:
        providers = ", ".join(sorted(rules))
        raise ModelNotAllowed(
            f"app '{app_id}' may not use provider '{provider}' (only: {providers})",
            fields=[{"field": prefix + "provider" if prefix else field, "message": "not allowed"}],
        )
    if isinstance(rule, str):
        if model is None or model == rule:
            return rule
        raise ModelNotAllowed(
            f"app '{app_id}' is pinned to {provider} model '{rule}', not '{model}'",
            fields=[{"field": field, "message": f"must be '{rule}' (or left out)"}],
        )
    allowed = ", ".join(rule)
    if model is None:
        raise ValidationFailed(
            f"{field} is required: app '{app_id}' may use {provider} models {allowed}",
            fields=[{"field": field, "message": "required"}],
        )
    if not _allows(rule, model):
        raise ModelNotAllowed(
            f"app '{app_id}' may not use {provider} model '{model}' (allowed: {allowed})",
            fields=[{"field": field, "message": "not in the app's allowed models"}],
        )
    return model


def permits(app: AppConfig, provider: str, model: str) -> bool:
    """Whether the app may run `model` on `provider` (what `GET /v1/models` lists for it)."""
    if app.models is None:
        return True
    rule = app.models.get(provider)
    return rule is not None and _allows(rule, model)


def _allows(rule: str | list[str], model: str) -> bool:
    """Whether one provider's rule (a pinned name, or a list of names and prefixes) takes
    `model`."""
    if isinstance(rule, str):
        return model == rule
    return any(matches(pattern, model) for pattern in rule)


def matches(pattern: str, model: str) -> bool:
    """`gpt-4o-mini` matches itself only; `gpt-4.1*` any name starting `gpt-4.1`."""
    if pattern.endswith("*"):
        return model.startswith(pattern[:-1])
    return model == pattern
