"""Hostile tests of what a dead letter tells the pages of a lost detached relay: the same
messages a relay failure publishes, so a run on a thread's `threadInfo` names its thread
and run (`assistantThreadId`, `runId`), which a Klai Assistants page reads from it."""

from __future__ import annotations

import pytest

from streaming_proxy.deadletter import DeadLetters, LostJob, lost_error
from streaming_proxy.streams import StreamRecord


@pytest.mark.parametrize("kind", ["assistants", "llm"])
def test_a_lost_run_on_a_thread_says_its_thread_and_run_first(kind: str) -> None:
    job = LostJob.model_validate(
        {
            "stream_id": "st_lost",
            "app_id": "app1",
            "kind": kind,
            "action_name": "onLlm",
            "channels": ["room"],
            "thread": {"thread_id": "thread_abc", "run_id": "run_def"},
        }
    )
    stored = StreamRecord("st_lost", "app1", "onLlm", ["room"])  # pending: nothing was sent
    messages = DeadLetters._messages(job, stored, lost_error("EventAgeExceeded"))
    assert [(m["type"], m["seq"]) for m in messages] == [
        ("threadInfo", 0),
        ("error", 1),
        ("end", 2),
    ]
    assert messages[0]["content"] == {
        "streamId": "st_lost",
        "assistantThreadId": "thread_abc",
        "runId": "run_def",
    }


def test_a_lost_stream_on_no_thread_says_its_stream_only() -> None:
    job = LostJob(stream_id="st_x", app_id="app1", kind="llm", channels=["room"])
    stored = StreamRecord("st_x", "app1", "onLlm", ["room"])
    messages = DeadLetters._messages(job, stored, lost_error("RetriesExhausted"))
    assert messages[0]["content"] == {"streamId": "st_x"}
