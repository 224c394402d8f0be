"""Fault rules: which requests (a `Match`), how often (a `Schedule`), what to do (an `Action`)."""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from .faults import Action
from .wire import Request

HeaderPattern = str | re.Pattern[str]


def operation_pattern(operation: str) -> re.Pattern[str]:
    """Matches an `X-Amz-Target` naming this operation, e.g. `DynamoDB_20120810.Query`."""
    return re.compile(rf"\.{re.escape(operation)}$")


@dataclass(frozen=True)
class Match:
    """Which requests a rule (or a traffic query) is about; every given part must hold.
    `path` is searched in the path (without query); a header is a str (equal) or a
    compiled pattern (searched); header names are case-insensitive."""

    method: str | None = None
    path: re.Pattern[str] | None = None
    headers: tuple[tuple[str, HeaderPattern], ...] = ()

    @classmethod
    def of(
        cls,
        *,
        method: str | None = None,
        path: str | re.Pattern[str] | None = None,
        headers: Mapping[str, HeaderPattern] | None = None,
        operation: str | None = None,
    ) -> Match:
        """`operation` is a DynamoDB (JSON protocol) operation such as "Query"."""
        wanted = dict(headers or {})
        if operation is not None:
            wanted["X-Amz-Target"] = operation_pattern(operation)
        return cls(
            method.upper() if method else None,
            re.compile(path) if isinstance(path, str) else path,
            tuple(wanted.items()),
        )

    @property
    def is_any(self) -> bool:
        return self.method is None and self.path is None and not self.headers

    def __call__(self, request: Request) -> bool:
        if self.method is not None and request.method != self.method:
            return False
        if self.path is not None and not self.path.search(request.path):
            return False
        return all(_header_holds(request, name, want) for name, want in self.headers)


def _header_holds(request: Request, name: str, want: HeaderPattern) -> bool:
    value = request.head.header(name)
    if value is None:
        return False
    return value == want if isinstance(want, str) else want.search(value) is not None


@dataclass(frozen=True)
class Schedule:
    """Which of a rule's matches it fires on: skip the first `after`, then every `every`-th,
    each with `probability` (a per-rule seeded RNG, so a run is reproducible), at most
    `times` in all (None: no limit)."""

    times: int | None = None
    every: int = 1
    probability: float = 1.0
    after: int = 0

    def __post_init__(self) -> None:
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0")
        if self.every < 1:
            raise ValueError("every must be >= 1")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.after < 0:
            raise ValueError("after must be >= 0")


class Rule:
    """One fault rule and its counters. The counters change on the proxy's loop under the
    book's lock; reading one int from another thread needs no lock."""

    def __init__(self, action: Action, match: Match, schedule: Schedule, seed: int) -> None:
        if action.on_accept and not match.is_any:
            raise ValueError(f"{action.name} acts before a request is read: it cannot match one")
        self.action = action
        self.match = match
        self.schedule = schedule
        self.matched = 0
        self.fired = 0
        self._rng = random.Random(seed)

    @property
    def name(self) -> str:
        return self.action.name

    @property
    def exhausted(self) -> bool:
        return self.schedule.times is not None and self.fired >= self.schedule.times

    def consider(self, request: Request | None) -> bool:
        """Count a match (None: a new connection) and say whether the rule fires on it."""
        if request is not None and not self.match(request):
            return False
        self.matched += 1
        nth = self.matched - self.schedule.after
        if nth <= 0 or self.exhausted or nth % self.schedule.every:
            return False
        if self.schedule.probability < 1.0 and self._rng.random() >= self.schedule.probability:
            return False
        self.fired += 1
        return True

    def __repr__(self) -> str:
        return f"<Rule {self.name} matched={self.matched} fired={self.fired}>"


class RuleBook:
    """The rules in the order they were added. The first rule that fires on a request
    decides it; rules after it do not see that request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = []

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def pick(self, request: Request | None) -> Rule | None:
        """The rule that fires on this request, or on a new connection when None."""
        on_accept = request is None
        with self._lock:
            for rule in self._rules:
                if rule.action.on_accept == on_accept and rule.consider(request):
                    return rule
        return None
