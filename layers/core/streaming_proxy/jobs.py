"""StreamJob: everything needed to run one stream, serialisable for the async self-invoke."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from .contract import Payload
from .events import is_frontend
from .providers.base import LlmRequest
from .providers.sampling import Source, normalise

StreamKind = Literal["chat", "llm", "openai", "assistants"]


class RunIds(Protocol):
    """A run on a thread, as far as the pages are told of it."""

    thread_id: str
    run_id: str


def thread_info(stream_id: str, thread: RunIds | None) -> dict[str, str]:
    """`threadInfo`'s content: the stream, and for a run on a thread its thread and run."""
    content = {"streamId": stream_id}
    if thread is not None:
        content |= {"assistantThreadId": thread.thread_id, "runId": thread.run_id}
    return content


class ThreadRun(BaseModel):
    """The thread a stream runs on (threads.py): its run, the run's lease, and how many of
    the payload's messages (its last ones) the request added, stored with the answer when
    the run ends (runs.py). A count, not a copy: the job's event (a self-invoke, at most
    detached.MAX_DETACHED_EVENT_BYTES, 768 KiB) would carry each new message twice."""

    thread_id: str
    run_id: str
    new: bool
    lease_until: int
    ttl_seconds: int
    added: int = Field(ge=0)
    # What trimming the history to its budget left out (history.py), for the run's log.
    dropped: int = 0
    tokens: int = 0
    # The payload holds only the new messages: the relay reads and trims the history
    # (runs.ThreadRuns.with_history), as a Lambda self-invoke's event carries no history.
    history_pending: bool = False


class StreamJob(BaseModel):
    """One accepted request, ready for the relay (in this process or in a self-invoke)."""

    stream_id: str
    app_id: str
    kind: StreamKind
    action_name: str
    # `lambda: []`, not `list`: cheaper at import (docs/architecture.md decision 31).
    channels: list[str] = Field(default_factory=lambda: [])
    payload: Payload
    flush_interval_ms: int = Field(ge=0, le=1000)
    # The tool loop (tools/loop.py): rounds it may run, and how long a frontend tool waits.
    max_tool_rounds: int = Field(default=0, ge=0)
    tool_timeout_seconds: float = Field(default=90.0, gt=0)
    # Set when the stream is a run on a thread (Assistants, or LLM Query with thread_id).
    thread: ThreadRun | None = None

    def replaced(self, **update: Any) -> StreamJob:
        """A copy with `update` applied, its request built anew (`model_copy` alone would
        keep the `llm_request` cached from the old payload)."""
        copied = self.model_copy(update=update)
        copied.__dict__.pop("llm_request", None)
        return copied

    @property
    def runs_tools(self) -> bool:
        """Whether the proxy runs the model's tool calls (the tool loop). The Klai faces do;
        the OpenAI face leaves every call to its caller, as OpenAI does."""
        return self.kind != "openai" and bool(self.payload.tools)

    @property
    def frontend_tools(self) -> list[str]:
        """Names of the `ui_` tools the request offers the model."""
        return [
            str(tool.function.get("name"))
            for tool in self.payload.tools or []
            if is_frontend(str(tool.function.get("name", "")))
        ]

    @property
    def provider(self) -> str:
        return self.payload.provider

    @cached_property
    def llm_request(self) -> LlmRequest:
        """The provider-neutral request, built once per job (messages can be large);
        ValidationFailed when a sampling setting is malformed or set twice."""
        sampling, (_, args, generation) = normalise(
            *self._setting_sources(), args_prefix=self._field_prefix + "providerArgs."
        )
        return LlmRequest(
            model=self.payload.model,
            messages=[m.model_dump(exclude_none=True) for m in self.payload.messages],
            tools=[t.model_dump(exclude_none=True) for t in self.payload.tools]
            if self.payload.tools
            else None,
            tool_choice=self.payload.tool_choice,
            provider_args=args,
            generation_config=generation or None,
            api_key=self.payload.api_key,
            sampling=sampling,
        )

    @property
    def _field_prefix(self) -> str:
        # The OpenAI face's settings are top-level body fields; the Klai faces' are in payload.
        return "" if self.kind == "openai" else "payload."

    def _setting_sources(self) -> tuple[Source, Source, Source]:
        prefix = self._field_prefix
        return (
            Source(prefix, self.payload.model_extra or {}),
            Source(prefix + "providerArgs.", self.payload.provider_args),
            Source(prefix + "generationConfig.", self.payload.generation_config or {}),
        )

    def to_event(self) -> dict[str, Any]:
        """The self-invoke payload. The provider key travels inside AWS only, never logged."""
        data = self.model_dump(mode="json", by_alias=True)
        key = self.payload.api_key
        data["payload"]["apiKey"] = key.get_secret_value() if key else None
        return {"streamingProxyJob": data}

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> StreamJob:
        return cls.model_validate(event["streamingProxyJob"])
