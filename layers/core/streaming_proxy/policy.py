"""An app's policy on what a request may ask for: providers, models and provider keys.

Applied before anything is published (`StreamService.check`). `models` maps a provider to a
pinned model (a string: a request without a model gets it, one naming another is refused,
as Kong's AI Proxy does) or to an allow-list (exact names, or a prefix ending in `*`; `*`
alone allows any model of that provider). Once the map is set, a provider it does not name
is refused. Every model a request names is held to the map, not only `payload.model`:
the `providerArgs` keys with which a gateway picks models (`named_models`) are checked too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .config import AppConfig
from .errors import ModelNotAllowed, ProviderKeyRefused, ValidationFailed
from .jobs import StreamJob

# providerArgs keys naming models a gateway runs instead of, or after, `payload.model`:
# OpenRouter's `models` (fallbacks, in order), `fallbacks` (OpenRouter's Messages API,
# LiteLLM, other gateways: names, or objects with a `model`). `model` itself never reaches
# a provider (payload.model is the request's model), but a caller writing one names a model.
MODEL_LISTS = ("models", "fallbacks")
# Keys with which the gateway picks models the proxy never sees, so no map can check them:
# OpenRouter's `preset` (a stored configuration that may name any model), and its
# `route: "fallback"` without a `models` list (it then chooses the fallback itself).
UNCHECKABLE = ("preset", "route")


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
        # On /v1 every unknown body field is a providerArgs key: named as the caller sent it.
        args_prefix = prefix + "providerArgs." if prefix else ""
        for field, model in named_models(job.payload.provider_args, args_prefix):
            allowed_model(app_id, app, job.provider, model, prefix, field=field)


def allowed_model(
    app_id: str,
    app: AppConfig,
    provider: str,
    model: str | None,
    prefix: str = "payload.",
    *,
    field: str | None = None,
) -> str:
    """The model the request runs with under `app.models`, or the error refusing it;
    `field` names where the model was written (`{prefix}model` unless given)."""
    rules = app.models or {}
    field = field or prefix + "model"
    rule = rules.get(provider)
    if rule is None:
        providers = ", ".join(sorted(rules))
        raise ModelNotAllowed(
            f"app '{app_id}' may not use provider '{provider}' (only: {providers})",
            fields=[{"field": prefix + "provider" if prefix else field, "message": "not allowed"}],
        )
    if model is None:
        if isinstance(rule, str):
            return rule
        raise ValidationFailed(
            f"{field} is required: app '{app_id}' may use {provider} models {', '.join(rule)}",
            fields=[{"field": field, "message": "required"}],
        )
    if not _allows(rule, model):
        raise _refused(app_id, provider, rule, model, field)
    return model


def _refused(
    app_id: str, provider: str, rule: str | list[str], model: str, field: str
) -> ModelNotAllowed:
    if isinstance(rule, str):
        return ModelNotAllowed(
            f"app '{app_id}' is pinned to {provider} model '{rule}', not '{model}'",
            fields=[{"field": field, "message": f"must be '{rule}' (or left out)"}],
        )
    return ModelNotAllowed(
        f"app '{app_id}' may not use {provider} model '{model}' (allowed: {', '.join(rule)})",
        fields=[{"field": field, "message": "not in the app's allowed models"}],
    )


def named_models(args: dict[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    """Each model `args` (a request's providerArgs) names, with the field it is in
    (`{prefix}models[1]`); ModelNotAllowed for a key that lets the gateway choose one, 400
    for a model-naming key of another shape (it could not be checked). Null keys are left
    out: they never reach a provider."""
    for key in UNCHECKABLE:
        if args.get(key) is not None and not (key == "route" and args.get("models")):
            raise ModelNotAllowed(
                f"{prefix}{key} lets the provider choose models the app's policy cannot check",
                fields=[{"field": prefix + key, "message": "not allowed under a models policy"}],
            )
    model = args.get("model")
    if model is not None:
        # On /v1 (no prefix) `model` is the body's own field: this one came in providerArgs.
        field = (prefix or "providerArgs.") + "model"
        yield field, _model_name(model, field)
    for key in MODEL_LISTS:
        entries = args.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise _malformed(prefix + key, "must be a list of model names")
        for index, entry in enumerate(entries):
            field = f"{prefix}{key}[{index}]"
            if isinstance(entry, dict):
                yield field + ".model", _model_name(entry.get("model"), field + ".model")
            else:
                yield field, _model_name(entry, field)


def _model_name(value: Any, field: str) -> str:
    if isinstance(value, str) and value:
        return value
    raise _malformed(field, "must be a model name (a string)")


def _malformed(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field} {message}", fields=[{"field": field, "message": message}])


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


# OpenRouter reads `@preset/<slug>` in a model name (alone or after one) as a stored
# configuration, which may run any model: a prefix cannot vouch for it, an exact entry can.
_PRESET = "@preset/"


def matches(pattern: str, model: str) -> bool:
    """`gpt-4o-mini` matches itself only; `*` anything; `gpt-4.1*` any name starting
    `gpt-4.1` that names no OpenRouter preset."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return model.startswith(pattern[:-1]) and _PRESET not in model.lower()
    return model == pattern
