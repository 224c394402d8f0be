"""Each provider's rendering of the typed `Sampling`: one function per wire format.

What a provider cannot take is an error naming the field and the provider, raised in
`prepare` before anything is published, never a provider's 400. docs/providers.md lists
every rule.
"""

from __future__ import annotations

from typing import Any

from .base import LlmRequest
from .sampling import Rendered, Sampling, no_gemini_config, one_choice, thinking_budget
from .structured import answer_tool

# Anthropic requires max_tokens; the answer's own budget when a request sets none.
DEFAULT_MAX_TOKENS = 4096
# Settings with no equivalent in these formats.
_NOT_ANTHROPIC = ("seed", "presence_penalty", "frequency_penalty", "logit_bias")
_NOT_GEMINI = ("logit_bias",)
_NOT_CONVERSE = ("seed", "presence_penalty", "frequency_penalty", "logit_bias")
_OPENAI_NAMES = (
    "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
    "reasoning_effort", "user",
)  # fmt: skip


def openai_settings(request: LlmRequest, provider: str, *, compatible: bool) -> Rendered:
    """Chat Completions fields. OpenAI and Azure take `max_completion_tokens` (which newer
    models require); compatible servers `max_tokens` (which they all know) and `top_k`."""
    s = request.sampling
    one_choice(s)
    no_gemini_config(request.generation_config, provider)
    if not compatible:
        s.refuse_all(("top_k",), provider)
    out = Rendered(s)
    out.put("max_tokens" if compatible else "max_completion_tokens", s.max_tokens, "max_tokens")
    for name in _OPENAI_NAMES:
        out.put(name, getattr(s, name), name)
    out.put("top_k", s.top_k, "top_k")
    out.put("stop", list(s.stop) if s.stop else None, "stop")
    if s.response_format is not None:
        out.put("response_format", s.response_format.native, "response_format")
    # Without tools there is nothing to run in parallel (OpenAI refuses the field then).
    if request.tools:
        out.put("parallel_tool_calls", s.parallel_tool_calls, "parallel_tool_calls")
    return out


def anthropic_settings(request: LlmRequest, body: dict[str, Any]) -> Rendered:
    """Messages API fields, given the body with its tools and tool_choice: stop sequences,
    top_k, `metadata.user_id`, a forced answer tool for JSON, `thinking` for an effort."""
    s = request.sampling
    _common(request, "anthropic", _NOT_ANTHROPIC)
    out = Rendered(s)
    for name in ("temperature", "top_p", "top_k"):
        out.put(name, getattr(s, name), name)
    out.put("stop_sequences", list(s.stop) if s.stop else None, "stop")
    out.put("metadata", {"user_id": s.user} if s.user else None, "user")
    tool = answer_tool(s, "anthropic", bool(body.get("tools")))
    choice = body.get("tool_choice")
    if tool is not None:
        spec = {"name": tool.name, "description": tool.description, "input_schema": tool.schema}
        out.put("tools", [spec], "response_format")
        out.put("tool_choice", {"type": "tool", "name": tool.name}, "response_format")
    elif s.parallel_tool_calls is False and body.get("tools") and _may_parallel(choice):
        parallel = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        out.put("tool_choice", parallel, "parallel_tool_calls")
    max_tokens = s.max_tokens or DEFAULT_MAX_TOKENS
    budget = thinking_budget(s)
    if budget is not None:
        forced = isinstance(choice, dict) and choice.get("type") in ("any", "tool")
        _thinking_allowed(s, forced, "anthropic")
        out.put("thinking", {"type": "enabled", "budget_tokens": budget}, "reasoning_effort")
        max_tokens += budget  # the budget counts against max_tokens, which must exceed it
    out.put("max_tokens", max_tokens, "max_tokens")
    return out


def gemini_settings(request: LlmRequest) -> Rendered:
    """`generationConfig` fields: JSON through responseMimeType + responseJsonSchema, an
    effort as thinkingConfig.thinkingBudget. Gemini has no user field: `user` is dropped."""
    s = request.sampling
    one_choice(s)
    s.refuse_all(_NOT_GEMINI, "gemini")
    if s.parallel_tool_calls is False:
        raise s.refuse("parallel_tool_calls", "gemini", "it cannot turn parallel calls off")
    out = Rendered(s)
    out.put("maxOutputTokens", s.max_tokens, "max_tokens")
    out.put("temperature", s.temperature, "temperature")
    out.put("topP", s.top_p, "top_p")
    out.put("topK", s.top_k, "top_k")
    out.put("stopSequences", list(s.stop) if s.stop else None, "stop")
    out.put("seed", s.seed, "seed")
    out.put("presencePenalty", s.presence_penalty, "presence_penalty")
    out.put("frequencyPenalty", s.frequency_penalty, "frequency_penalty")
    fmt = s.response_format
    if fmt is not None and fmt.is_json:
        out.put("responseMimeType", "application/json", "response_format")
        out.put("responseJsonSchema", fmt.schema, "response_format")
    budget = thinking_budget(s)
    if budget is not None:
        out.put("thinkingConfig", {"thinkingBudget": budget}, "reasoning_effort")
    return out


def converse_settings(
    request: LlmRequest, tool_config: dict[str, Any] | None
) -> tuple[Rendered, Rendered]:
    """Converse's top-level fields (inferenceConfig, toolConfig for a JSON answer,
    requestMetadata for `user`) and its additionalModelRequestFields (top_k and thinking,
    in the Anthropic models' names)."""
    s = request.sampling
    _common(request, "bedrock", _NOT_CONVERSE)
    if s.parallel_tool_calls is False:
        raise s.refuse("parallel_tool_calls", "bedrock", "it cannot turn parallel calls off")
    top, extra = Rendered(s), Rendered(s)
    inference: dict[str, Any] = {
        "maxTokens": s.max_tokens,
        "temperature": s.temperature,
        "topP": s.top_p,
        "stopSequences": list(s.stop) if s.stop else None,
    }
    extra.put("top_k", s.top_k, "top_k")
    tool = answer_tool(s, "bedrock", tool_config is not None)
    if tool is not None:
        spec = {
            "name": tool.name,
            "description": tool.description,
            "inputSchema": {"json": tool.schema},
        }
        config = {"tools": [{"toolSpec": spec}], "toolChoice": {"tool": {"name": tool.name}}}
        top.put("toolConfig", config, "response_format")
    budget = thinking_budget(s)
    if budget is not None:
        _thinking_allowed(s, "toolChoice" in (tool_config or {}), "bedrock")
        extra.put("thinking", {"type": "enabled", "budget_tokens": budget}, "reasoning_effort")
        inference["maxTokens"] = (s.max_tokens or DEFAULT_MAX_TOKENS) + budget
    inference = {k: v for k, v in inference.items() if v is not None}
    top.put("inferenceConfig", inference or None, "max_tokens")
    top.put("requestMetadata", {"user": s.user} if s.user else None, "user")
    return top, extra


def _common(request: LlmRequest, provider: str, unsupported: tuple[str, ...]) -> None:
    one_choice(request.sampling)
    no_gemini_config(request.generation_config, provider)
    request.sampling.refuse_all(unsupported, provider)


def _may_parallel(choice: Any) -> bool:
    # Only auto/any/tool choices carry disable_parallel_tool_use; "none" calls no tool.
    return choice is None or (isinstance(choice, dict) and choice.get("type") != "none")


def _thinking_allowed(s: Sampling, forced_tool: bool, provider: str) -> None:
    """Extended thinking refuses sampling changes and forced tools (Anthropic's rules,
    which Bedrock's Claude models share): each is an error naming both fields."""
    effort = s.field_of("reasoning_effort")
    clashes = [
        name
        for name, clash in (
            ("temperature", s.temperature is not None and s.temperature != 1),
            ("top_k", s.top_k is not None),
            ("top_p", s.top_p is not None and s.top_p < 0.95),
            ("response_format", s.response_format is not None and s.response_format.is_json),
        )
        if clash
    ]
    if clashes:
        raise s.refuse(clashes[0], provider, f"not with {effort}")
    if forced_tool:
        raise s.refuse("reasoning_effort", provider, "not with a tool_choice that forces a tool")
