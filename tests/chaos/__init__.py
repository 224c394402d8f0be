"""A fault-injecting HTTP/1.1 proxy for chaos tests: put it between the stack and a target.

with ChaosProxy(management_url) as proxy:
    rule = proxy.add_rule(gone(), path="/@connections/", times=2)
    ...  # point WS_MANAGEMENT_ENDPOINT at proxy.base_url, run a stream
    assert rule.fired == 2
"""

from .faults import (
    Action,
    close_after,
    cut_after,
    delay,
    dynamodb_error,
    gone,
    hang,
    reset,
    reset_before_request,
    server_error,
    status,
    throttle,
)
from .proxy import ChaosProxy
from .rules import Match, Rule, Schedule
from .traffic import Exchange, Traffic

__all__ = [
    "Action",
    "ChaosProxy",
    "Exchange",
    "Match",
    "Rule",
    "Schedule",
    "Traffic",
    "close_after",
    "cut_after",
    "delay",
    "dynamodb_error",
    "gone",
    "hang",
    "reset",
    "reset_before_request",
    "server_error",
    "status",
    "throttle",
]
