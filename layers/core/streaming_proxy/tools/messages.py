"""What the pages hear of a tool round: `function_call` and `llmToolCall` bodies.

An `llmToolCall` must fit one WebSocket message (API Gateway refuses a post over 128 KB, and
a lane counts such a message dropped): a frontend call whose event would not is sent to no
page and fails at once (tools/loop.py), the model told why, instead of waiting its whole
timeout for an answer no page can give. (`function_call` is fitted on the way to the
channels, envelopes.fitted_function_call: the SSE caller gets every argument.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..envelopes import fits_message
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


def reaches_pages(call: PlannedCall) -> bool:
    """Whether a frontend call's `llmToolCall` fits one WebSocket message."""
    return fits_message(llm_tool_call_fields(call))


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
