"""Shared fixtures: the real local stack (`python -m devstack`) on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.process import StackProcess, start_stack
from tests.fake_llm import FakeLlm

ROOT = Path(__file__).resolve().parent.parent


Stack = StackProcess


# Fake provider keys the stack holds; tests check they never reach the logs.
FAKE_OPENAI_KEY = "fake-openai-server-key-0123456789"
FAKE_ANTHROPIC_KEY = "fake-anthropic-server-key-0123456789"


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLlm]:
    """A fake OpenAI/Anthropic-format upstream on loopback."""
    server = FakeLlm()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def stack_env(fake_llm: FakeLlm) -> dict[str, str]:
    """The openai and anthropic providers pointed at the fake upstream, with fake server keys."""
    return {
        "OPENAI_BASE_URL": fake_llm.base_url,
        "OPENAI_API_KEY": FAKE_OPENAI_KEY,
        "ANTHROPIC_BASE_URL": fake_llm.base_url,
        "ANTHROPIC_API_KEY": FAKE_ANTHROPIC_KEY,
    }


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLlm) -> Iterator[Stack]:
    """One running local stack for the session (real HTTP, real WebSocket, moto DynamoDB),
    with the openai and anthropic providers pointed at the fake upstream."""
    running = start_stack(tmp_path_factory.mktemp("stack"), stack_env(fake_llm))
    try:
        yield running
    finally:
        running.stop()
