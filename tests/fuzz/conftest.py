"""Fixtures of the fuzzers: a stack of their own, the secrets in play, their part of the log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.process import start_stack
from tests.conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, Stack, stack_env
from tests.fake_llm import FakeLlm

from .ledger import SecretLedger
from .stack_log import LogWindow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLlm) -> Iterator[Stack]:
    """The session's stack, started afresh for each fuzz module: whatever a fuzzer provokes (a
    wedged I/O pool, a crashed stream, a stuck connection) stays out of the tests after it."""
    # The deployment's own caps at the schema's ceilings: every request the schema allows is
    # one this deployment accepts (a smaller cap is a documented 400, not a fuzz finding).
    env = {**stack_env(fake_llm), "MAX_TOOL_ROUNDS": "32"}
    running = start_stack(tmp_path_factory.mktemp("fuzz-stack"), env)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def log_window(stack: Stack) -> LogWindow:
    """The stack's log from the start of this module's fuzzing on (after the startup banner,
    which prints the dev app key on purpose)."""
    return LogWindow.from_now(stack)


@pytest.fixture(scope="module")
def ledger(stack: Stack) -> SecretLedger:
    """The server-held provider keys and the app key; the fuzzers add what they send."""
    ledger = SecretLedger()
    for secret in (FAKE_OPENAI_KEY, FAKE_ANTHROPIC_KEY, stack.api_key):
        ledger.add(secret)
    return ledger
