"""What the pages hear of a tool round: `function_call` and `llmToolCall` bodies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..events import PlannedCall
from ..outcome import ToolCall, function_entry


def function_call_content(calls: Sequence[PlannedCall | ToolCall]) -> dict[str, Any]:
    """`function_call.content`: the calls of a round (the proxy's ids), or the calls a
    stream ends with."""
    return {"functions": [function_entry(c.name, c.arguments, c.id) for c in calls]}


def llm_tool_call_fields(call: PlannedCall) -> dict[str, Any]:
    """An `llmToolCall` envelope's own fields. `action` as well as `type`: Klai page
    handlers test `data.action`; `functions` is Klai's options shape."""
    return {
        "action": "llmToolCall",
        "toolCallId": call.id,
        "toolName": call.tool_name,
        "arguments": call.arguments,
        "functions": [{"name": call.tool_name, "arguments": call.arguments}],
    }


def as_tool_calls(calls: tuple[PlannedCall, ...]) -> list[ToolCall]:
    """Calls left for the backend, as the outcome (and `stream:false`) reports them."""
    return [
        ToolCall(
            c.id,
            c.name,
            c.arguments
            if isinstance(c.arguments, str)
            else json.dumps(c.arguments, ensure_ascii=False),
        )
        for c in calls
    ]
