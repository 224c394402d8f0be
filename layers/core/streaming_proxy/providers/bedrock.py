"""BedrockProvider: boto3 `converse_stream`, read in a worker thread, as normalised events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import aws
from ..config import Settings
from ..errors import (
    ProviderNotConfigured,
    ProxyError,
    UpstreamError,
    UpstreamTimeout,
    ValidationFailed,
)
from ..events import (
    Finish,
    FinishReason,
    ProviderEvent,
    RedactedThinking,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    Usage,
)
from .base import LlmRequest
from .converse import converse_request
from .raw import begin_round, record_frame
from .structured import as_answer

_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

# In-stream exception events and the HTTP status each stands for (None: whatever failed).
STREAM_EXCEPTION_STATUS: dict[str, int | None] = {
    "throttlingException": 429,
    "validationException": 400,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
    "modelStreamErrorException": None,
}


class ConverseClient(Protocol):
    """The one boto3 `bedrock-runtime` method this adapter calls (tests pass fakes)."""

    @property
    def converse_stream(self) -> Callable[..., Any]: ...


ClientFactory = Callable[[str, "str | None"], ConverseClient]


# One cached `bedrock-runtime` client per region and endpoint (warm invocations reuse it).
bedrock_client = aws.bedrock_runtime


class BedrockProvider:
    """Amazon Bedrock through the Converse API.

    Credentials come only from the environment (the Lambda role locally or in AWS); a
    request's `apiKey` is ignored for this provider, so callers can never choose the AWS
    identity. The region comes from settings too (BEDROCK_REGION, else AWS_REGION), so a
    region pinned for data residency holds; a request may name another region with
    `providerArgs.region` only if BEDROCK_ALLOWED_REGIONS lists it.
    """

    name = "bedrock"

    def __init__(self, settings: Settings, *, client_factory: ClientFactory = bedrock_client):
        self._settings = settings
        self._client_factory = client_factory

    def prepare(self, request: LlmRequest) -> None:
        self.region(request)
        converse_request(request)

    def region(self, request: LlmRequest) -> str:
        """The configured region, or an allowed one the request asks for (400 otherwise)."""
        configured = self._settings.bedrock_region or self._settings.aws_region
        asked = request.provider_args.get("region")
        if asked is None or asked == configured:
            return configured
        if isinstance(asked, str) and asked in self._settings.bedrock_allowed_regions:
            return asked
        allowed = [configured, *self._settings.bedrock_allowed_regions]
        raise ValidationFailed(
            "providerArgs.region is not allowed for bedrock on this deployment",
            fields=[
                {
                    "field": "payload.providerArgs.region",
                    "message": "allowed: " + ", ".join(allowed),
                }
            ],
        )

    async def stream(self, request: LlmRequest) -> AsyncGenerator[ProviderEvent, None]:
        body = converse_request(request)
        region = self.region(request)
        endpoint = self._settings.bedrock_endpoint_url

        def converse_stream() -> Any:
            # Runs in the worker thread: building a client reads botocore's model files.
            return self._client_factory(region, endpoint).converse_stream(**body)

        feed = _Feed(asyncio.get_running_loop())
        threading.Thread(
            target=feed.run, args=(converse_stream,), name="bedrock-stream", daemon=True
        ).start()
        state = _StreamState()
        begin_round()
        try:
            while (item := await feed.queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise upstream_error(item) from item
                record_frame(item)
                for event in as_answer(state.feed(item), request.sampling):
                    yield event
        finally:
            feed.stop()
        if state.reason is None:
            raise UpstreamError("bedrock stream ended before messageStop")
        for event in as_answer([Finish(state.reason)], request.sampling):
            yield event


_END = object()


class _Feed:
    """Hands the worker thread's events to the event loop, and stops the worker early.

    The queue is unbounded: a model streams far slower than the loop drains it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = loop
        self._lock = threading.Lock()
        self._stopped = False
        self._stream: Any = None

    def run(self, converse_stream: Callable[[], Any]) -> None:
        """The worker thread: call Bedrock, then iterate its EventStream into the queue."""
        stream = None
        try:
            stream = converse_stream()["stream"]
            with self._lock:
                if self._stopped:
                    return
                self._stream = stream
            for event in stream:
                if self._stopped:
                    return
                self._put(event)
            self._put(_END)
        except Exception as e:
            if not self._stopped:
                self._put(e)
        finally:
            if stream is not None:
                _close(stream)

    def stop(self) -> None:
        """From the loop: the consumer is done. The stream is closed by a thread of its own:
        botocore's close waits for a read in progress (the socket's lock), which lasts until
        Bedrock's next bytes or the read timeout (60 s), and on the loop that would freeze
        every stream of the process. The worker ends after that read."""
        with self._lock:
            self._stopped = True
            stream, self._stream = self._stream, None
        if stream is not None:
            closer = threading.Thread(target=_close, args=(stream,), name="bedrock-close")
            closer.daemon = True
            closer.start()

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            self._stopped = True  # the loop is closed: nobody is listening any more


def _close(stream: Any) -> None:
    # Closing a connection that already broke may fail; it is gone either way.
    with contextlib.suppress(Exception):
        stream.close()


@dataclass(slots=True)
class _StreamState:
    """What one ConverseStream has said so far: tool numbering, usage, the stop reason."""

    tool_index: dict[int, int] = field(default_factory=dict)
    reason: FinishReason | None = None

    def feed(self, event: dict[str, Any]) -> list[ProviderEvent]:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            tool = (start.get("start") or {}).get("toolUse")
            if tool is None:
                return []
            index = self.tool_index[start.get("contentBlockIndex", 0)] = len(self.tool_index)
            return [ToolCallDelta(index, id=tool.get("toolUseId"), name=tool.get("name"))]
        if "contentBlockDelta" in event:
            return self._delta(event["contentBlockDelta"])
        if "messageStop" in event:
            self.reason = _STOP_REASONS.get(event["messageStop"].get("stopReason"), "stop")
            return []
        if "metadata" in event:
            return _usage(event["metadata"].get("usage"))
        for name, status in STREAM_EXCEPTION_STATUS.items():
            if name in event:
                raise _stream_exception(name, status, event[name] or {})
        return []  # messageStart, contentBlockStop and event types newer than this adapter

    def _delta(self, block: dict[str, Any]) -> list[ProviderEvent]:
        delta = block.get("delta") or {}
        if delta.get("text"):
            return [TextDelta(delta["text"])]
        tool_input = (delta.get("toolUse") or {}).get("input")
        index = self.tool_index.get(block.get("contentBlockIndex", 0))
        if tool_input and index is not None:
            return [ToolCallDelta(index, arguments=tool_input)]
        return _reasoning(delta.get("reasoningContent") or {})


def _reasoning(delta: dict[str, Any]) -> list[ProviderEvent]:
    """A reasoningContent delta: text, then the signature that closes the block; or a
    redacted block, whose bytes (boto3 decodes the blob) travel as base64 text."""
    events: list[ProviderEvent] = []
    if delta.get("text"):
        events.append(ThinkingDelta(delta["text"]))
    if delta.get("signature"):
        events.append(ThinkingSignature(delta["signature"]))
    redacted = delta.get("redactedContent")
    if isinstance(redacted, bytes | bytearray) and redacted:
        events.append(RedactedThinking(base64.b64encode(redacted).decode("ascii")))
    return events


def _usage(usage: dict[str, Any] | None) -> list[ProviderEvent]:
    if not usage:
        return []
    prompt = usage.get("inputTokens")
    if prompt is not None:
        prompt += (usage.get("cacheReadInputTokens") or 0) + (
            usage.get("cacheWriteInputTokens") or 0
        )
    return [Usage(prompt, usage.get("outputTokens"))]


def _stream_exception(name: str, status: int | None, body: dict[str, Any]) -> UpstreamError:
    message = body.get("message") or body.get("Message") or name
    original = body.get("originalStatusCode")
    return UpstreamError(
        f"bedrock stream error ({name}): {message}",
        upstream_status=original if isinstance(original, int) else status,
        details=f"bedrock exception {name}",
    )


def upstream_error(error: BaseException) -> ProxyError:
    """A boto3/botocore failure (on the call or inside the stream) as our error."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(error, ProxyError):
        return error
    if isinstance(error, NoCredentialsError):
        return ProviderNotConfigured(
            "bedrock has no AWS credentials: give the function a role with bedrock:InvokeModel"
        )
    if isinstance(error, ClientError):
        # EventStreamError (in-stream exceptions) is a ClientError without an HTTP status.
        code = str(error.response.get("Error", {}).get("Code", ""))
        message = error.response.get("Error", {}).get("Message") or str(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status is None:
            status = STREAM_EXCEPTION_STATUS.get(code[:1].lower() + code[1:])
        return UpstreamError(
            f"bedrock returned {code or 'an error'}: {message}",
            upstream_status=status,
            details=f"bedrock error code {code}" if code else "",
        )
    if isinstance(error, ConnectTimeoutError | ReadTimeoutError):
        return UpstreamTimeout(f"bedrock timed out: {type(error).__name__}")
    if isinstance(error, BotoCoreError):
        return UpstreamError(f"bedrock request failed: {error}")
    return UpstreamError(f"bedrock stream failed: {type(error).__name__}: {error}")
