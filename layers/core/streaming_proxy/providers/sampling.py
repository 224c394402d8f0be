"""Sampling settings: every spelling a caller may use, read once into one typed `Sampling`.

Klai apps send settings at the top of `payload` (older docs: `temperature`, `max_tokens`),
in `providerArgs` under friendly names (`maxTokens`, `topP`, `stopSequences`) or in
Gemini's `generationConfig`; the OpenAI face sends OpenAI's names. Each provider renders the
one typed form in its own function, so no provider sees a spelling it does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from ..errors import ValidationFailed

Effort = Literal["low", "medium", "high"]
EFFORTS: tuple[Effort, ...] = ("low", "medium", "high")

# Every setting and the names it goes by; the first is the canonical one.
ALIASES: dict[str, tuple[str, ...]] = {
    "max_tokens": (
        "max_tokens", "maxTokens", "max_completion_tokens", "maxCompletionTokens",
        "max_output_tokens", "maxOutputTokens",
    ),
    "temperature": ("temperature",),
    "top_p": ("top_p", "topP"),
    "top_k": ("top_k", "topK"),
    "stop": ("stop", "stop_sequences", "stopSequences"),
    "seed": ("seed",),
    "presence_penalty": ("presence_penalty", "presencePenalty"),
    "frequency_penalty": ("frequency_penalty", "frequencyPenalty"),
    "logit_bias": ("logit_bias", "logitBias"),
    "n": ("n", "candidate_count", "candidateCount"),
    "response_format": ("response_format", "responseFormat"),
    "reasoning_effort": ("reasoning_effort", "reasoningEffort"),
    "user": ("user",),
    "parallel_tool_calls": ("parallel_tool_calls", "parallelToolCalls"),
}  # fmt: skip
_CANONICAL = {alias: name for name, aliases in ALIASES.items() for alias in aliases}


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """OpenAI's `response_format`: plain text, any JSON object, or JSON matching `schema`."""

    kind: Literal["text", "json_object", "json_schema"]
    name: str = "json_response"
    schema: dict[str, Any] | None = None
    native: dict[str, Any] = field(default_factory=dict)

    @property
    def is_json(self) -> bool:
        return self.kind != "text"


@dataclass(frozen=True, slots=True)
class Sampling:
    """The settings of one request, typed; `fields` names the caller's field for each one
    set (`payload.providerArgs.maxTokens`), so errors quote what the caller sent."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    n: int | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Effort | None = None
    user: str | None = None
    parallel_tool_calls: bool | None = None
    fields: dict[str, str] = field(default_factory=dict)
    # Where the caller's native pass-through keys came from, for errors naming them.
    args_prefix: str = "payload.providerArgs."

    def given(self) -> list[str]:
        """The canonical names of the settings this request set."""
        return [name for name in ALIASES if getattr(self, name) is not None]

    def field_of(self, name: str) -> str:
        return self.fields.get(name, name)

    def refuse(self, name: str, provider: str, why: str = "") -> ValidationFailed:
        """`name` is a setting `provider` cannot take: an error naming both."""
        where = self.field_of(name)
        reason = f" ({why})" if why else ""
        return invalid(where, f"{where} is not supported by provider '{provider}'{reason}")

    def refuse_all(self, names: tuple[str, ...], provider: str) -> None:
        """Raise for the first of `names` this request set."""
        for name in names:
            if getattr(self, name) is not None:
                raise self.refuse(name, provider)


@dataclass(frozen=True, slots=True)
class Source:
    """One place settings come from: `prefix` + key is the caller's field name."""

    prefix: str
    values: Mapping[str, Any]


def invalid(where: str, message: str) -> ValidationFailed:
    """A ValidationFailed naming the field, in the shape `parse` gives every field error."""
    return ValidationFailed(message, fields=[{"field": where, "message": message}])


def normalise(*sources: Source, args_prefix: str) -> tuple[Sampling, list[dict[str, Any]]]:
    """The typed settings of all `sources`, and each source's keys that are no setting
    (in the same order). The same setting twice with different values is an error naming
    both fields; a value of the wrong type is an error naming its field."""
    values: dict[str, Any] = {}
    fields: dict[str, str] = {}
    rests: list[dict[str, Any]] = []
    for source in sources:
        rest: dict[str, Any] = {}
        for key, raw in source.values.items():
            name = _CANONICAL.get(key)
            if name is None or raw is None:
                if raw is not None:
                    rest[key] = raw
                continue
            where = source.prefix + key
            value = _PARSERS[name](raw, where)
            if name in values and values[name] != value:
                raise invalid(
                    where,
                    f"{fields[name]} and {where} set the same setting to different values",
                )
            values.setdefault(name, value)
            fields.setdefault(name, where)
        rests.append(rest)
    return Sampling(**values, fields=fields, args_prefix=args_prefix), rests


def _integer(minimum: int | None) -> Callable[[Any, str], int]:
    def parse(value: Any, where: str) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 800.0 is the integer 800
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid(where, f"{where} must be an integer")
        if minimum is not None and value < minimum:
            raise invalid(where, f"{where} must be at least {minimum}")
        return value

    return parse


def _number(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid(where, f"{where} must be a number")
    return float(value)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(where, f"{where} must be true or false")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(where, f"{where} must be a non-empty string")
    return value


def _stop(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise invalid(where, f"{where} must be a string or a list of non-empty strings")
    return tuple(items)


def _bias(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise invalid(where, f"{where} must be an object of token ids to numbers")
    return {str(k): _number(v, f"{where}.{k}") for k, v in value.items()}


def _effort(value: Any, where: str) -> Effort:
    if value not in EFFORTS:
        raise invalid(where, f"{where} must be one of {', '.join(EFFORTS)}")
    return cast(Effort, value)


def _response_format(value: Any, where: str) -> ResponseFormat:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(kind, native=dict(value))
    if kind != "json_schema":
        raise invalid(where, f"{where}.type must be text, json_object or json_schema")
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(schema, dict) or not isinstance(name, str) or not name:
        raise invalid(
            f"{where}.json_schema",
            f"{where}.json_schema needs a name and a schema (a JSON Schema object)",
        )
    return ResponseFormat("json_schema", name=name, schema=schema, native=dict(value))


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "max_tokens": _integer(1),
    "temperature": _number,
    "top_p": _number,
    "top_k": _integer(1),
    "stop": _stop,
    "seed": _integer(None),
    "presence_penalty": _number,
    "frequency_penalty": _number,
    "logit_bias": _bias,
    "n": _integer(1),
    "response_format": _response_format,
    "reasoning_effort": _effort,
    "user": _string,
    "parallel_tool_calls": _boolean,
}


@dataclass(slots=True)
class Rendered:
    """Native fields rendered from settings, remembering which setting made each one."""

    sampling: Sampling
    fields: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def put(self, key: str, value: Any, setting: str) -> None:
        if value is not None:
            self.fields[key] = value
            self.origins[key] = setting

    def combine(self, native: Mapping[str, Any], prefix: str | None = None) -> dict[str, Any]:
        """The rendered fields plus the caller's native pass-through keys (`prefix` + key is
        their field). A key a setting rendered is an error naming both; any other native key
        replaces what is there, as native fields always did."""
        combined = dict(self.fields)
        for key, value in native.items():
            if key in self.origins:
                where = (self.sampling.args_prefix if prefix is None else prefix) + key
                setting = self.sampling.field_of(self.origins[key])
                raise invalid(where, f"{where} conflicts with {setting}: set only one of them")
            combined[key] = value
        return combined


def one_choice(sampling: Sampling) -> None:
    """`n` > 1: refused for every provider, never answered with a silent single choice."""
    if sampling.n is not None and sampling.n > 1:
        where = sampling.field_of("n")
        raise invalid(where, f"{where} > 1 is not supported: this proxy streams exactly one choice")


def no_gemini_config(generation_config: Mapping[str, Any] | None, provider: str) -> None:
    """Gemini-only `generationConfig` fields (what is left after the settings were read)
    for another provider: an error naming the first, never silently dropped."""
    for key in generation_config or {}:
        where = f"payload.generationConfig.{key}"
        raise invalid(where, f"{where} is a Gemini setting that provider '{provider}' cannot take")


def thinking_budget(sampling: Sampling) -> int | None:
    """The thinking budget (tokens) for `reasoning_effort`, or None when it is not set."""
    effort = sampling.reasoning_effort
    return None if effort is None else THINKING_BUDGETS[effort]


# Thinking budgets for `reasoning_effort` (tokens); Anthropic's minimum is 1024 and
# Gemini 2.5 Flash's maximum 24576.
THINKING_BUDGETS: dict[Effort, int] = {"low": 1024, "medium": 8192, "high": 24576}
