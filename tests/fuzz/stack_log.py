"""What the stack logged while a fuzz module ran: it must name no secret and no failure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from tests.conftest import Stack

from .ledger import SecretLedger

# More distinct errors than this in one report only hide the first ones.
MAX_REPORTED = 25
# Parts of an error message that vary with the input, not with the bug.
_VARYING = [
    (re.compile(r"\\ud[89a-f][0-9a-f]{2}"), r"\\udXXX"),
    (re.compile(r"(?<=Task)-\d+"), "-N"),  # asyncio task names
    (re.compile(r"(?<![-\w])\d+\b"), "N"),
]


@dataclass(frozen=True)
class LogWindow:
    """The part of the stack's log written since one module's fuzzing began (the startup
    banner, which prints the dev app key on purpose, stays outside)."""

    stack: Stack
    start: int

    @classmethod
    def from_now(cls, stack: Stack) -> LogWindow:
        return cls(stack, len(stack.logs()))

    def text(self) -> str:
        return self.stack.logs()[self.start :]


def assert_no_secret_logged(window: LogWindow, ledger: SecretLedger) -> None:
    written = window.text()
    assert written, "the fuzz run wrote nothing to the stack's log"
    leaked = ledger.leaked_in(written)
    assert not leaked, f"secrets reached the stack's log: {leaked}"


def assert_no_error_logged(window: LogWindow) -> None:
    """No request may break something the caller cannot see (a detached stream dying after
    its acknowledgement, a failed WebSocket route): ERROR records, records carrying an
    exception, and tracebacks are each a failure."""
    errors = unhandled_errors(window.text())
    assert not errors, f"{len(errors)} distinct errors logged:\n" + "\n".join(errors[:MAX_REPORTED])


def unhandled_errors(text: str) -> list[str]:
    """Distinct `context: exception` lines of the errors in a log."""
    lines = text.splitlines()
    found: set[str] = set()
    for index, line in enumerate(lines):
        if line.startswith("{"):
            found.update(_from_record(line))
        elif line.startswith("Traceback (most recent call last)"):
            context = lines[index - 1] if index > 0 else ""
            found.add(f"{context[:120]}: {_exception_line(lines, index)}")
    return sorted({_normalized(error) for error in found})


def _normalized(error: str) -> str:
    for pattern, replacement in _VARYING:
        error = pattern.sub(replacement, error)
    return error


def _from_record(line: str) -> list[str]:
    try:
        record = json.loads(line)
    except ValueError:
        return []
    if not isinstance(record, dict):
        return []
    exception = str(record.get("exception") or "").strip()
    if record.get("level") not in ("ERROR", "CRITICAL") and not exception:
        return []
    last = exception.splitlines()[-1] if exception else ""
    return [f"{record.get('level')} {record.get('message')!r}: {last[:200]}"]


def _exception_line(lines: list[str], start: int) -> str:
    """The `Type: message` line that ends the traceback starting at `start`."""
    for line in lines[start + 1 :]:
        if line and not line.startswith((" ", "\t", "Traceback")):
            return line[:200]
    return "(traceback without an exception line)"
