"""Request bodies of the public contract (described in docs/openapi.yaml), validated at the edge."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from . import native
from .channels.names import ChannelName
from .ids import THREAD_ID

Role = Literal["system", "user", "assistant", "tool", "developer"]

# A provider key travels in an HTTP header: visible ASCII only, or httpx refuses to send it
# (and a CR/LF could split the header).
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]{1,1024}$")
# Named actions are identifiers in the page: printable, no control characters.
# A model's name: a provider's are far shorter. The name reaches headers, URLs, records
# and every stream's analytics line, so it is bounded like every other field.
MAX_MODEL_CHARS = 256
_ACTION_NAME = re.compile(r"^[^\x00-\x1f\x7f\ud800-\udfff]{1,200}$")


def valid_action_name(value: str | None) -> str | None:
    if value is not None and not _ACTION_NAME.match(value):
        raise ValueError("actionName must be 1-200 characters with no control characters")
    return value


ActionName = Annotated[str | None, AfterValidator(valid_action_name)]


class _Open(BaseModel):
    """Wire shapes that keep fields they do not name (providers add new ones often)."""

    model_config = ConfigDict(extra="allow")


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageUrl(_Open):
    url: str = Field(min_length=1)
    detail: str | None = None


class ImageUrlPart(_Open):
    type: Literal["image_url"]
    image_url: ImageUrl | Annotated[str, Field(min_length=1)]


class InputAudioPart(_Open):
    """OpenAI's audio input; providers that cannot take it refuse it with a 400."""

    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class FilePart(_Open):
    """OpenAI's file input; providers that cannot take it refuse it with a 400."""

    type: Literal["file"]
    file: dict[str, Any]


ContentPart = Annotated[
    TextPart | ImageUrlPart | InputAudioPart | FilePart, Field(discriminator="type")
]


class FunctionCall(_Open):
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = ""


class HistoryToolCall(_Open):
    """A tool call of an earlier assistant turn, in OpenAI's format."""

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


# Parts in the provider-native shapes (native.py) become these OpenAI parts as they are read.
NativeContentPart = Annotated[ContentPart, BeforeValidator(native.content_part)]
GeminiPart = Annotated[dict[str, Any], BeforeValidator(native.gemini_part)]
_PARTS = TypeAdapter(list[NativeContentPart])


def _content(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # A list is read on its own, so a bad part is named `content.2`, not after a union branch.
    return _PARTS.validate_python(value) if isinstance(value, list) else handler(value)


class Message(_Open):
    """A chat message in OpenAI's form; `content` is a string or a list of parts (text,
    images). Gemini's `parts` and role `model`, and Anthropic's content blocks, are read
    into that form (native.py)."""

    role: Annotated[Role, BeforeValidator(native.role)]
    content: Annotated[str | list[ContentPart] | None, WrapValidator(_content)] = None
    # Gemini's name for content; moved into `content` once read.
    parts: list[GeminiPart] | None = Field(default=None, exclude=True)
    name: str | None = None
    tool_calls: list[HistoryToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _parts_are_content(self) -> Message:
        if self.parts is not None:
            if self.content is not None:
                raise ValueError("a message has content or parts (Gemini's), not both")
            self.content, self.parts = _PARTS.validate_python(self.parts), None
        return self


class Tool(BaseModel):
    """An OpenAI function tool: `{"type": "function", "function": {name, parameters, ...}}`;
    Klai's bare `{name, description, parameters?}` is read into it (native.py)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = "function"
    function: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, data: Any) -> Any:
        return native.tool(data)

    @model_validator(mode="after")
    def _has_name(self) -> Tool:
        name = self.function.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("tool.function.name must be a non-empty string")
        if "description" in self.function and not isinstance(self.function["description"], str):
            raise ValueError("tool.function.description must be a string")
        if "parameters" in self.function and not isinstance(self.function["parameters"], dict):
            raise ValueError("tool.function.parameters must be a JSON Schema object")
        return self


# Every spelling (OpenAI, Anthropic, Gemini, Klai) read into OpenAI's `tool_choice`.
ToolChoice = Annotated[native.ToolChoiceValue | None, BeforeValidator(native.tool_choice)]


ThreadId = Annotated[str, Field(pattern=THREAD_ID)]
RunId = Annotated[str, Field(pattern=r"^run_[A-Za-z0-9_-]{8,64}$")]
ASSISTANT_ID = r"^asst_[A-Za-z0-9_-]{8,64}$"
AssistantId = Annotated[str, Field(pattern=ASSISTANT_ID)]


class Payload(BaseModel):
    """The LLM request inside a Klai body."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    provider: str = "openai"
    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    stream: bool = True
    model: str | None = Field(default=None, max_length=MAX_MODEL_CHARS)
    messages: list[Message] = Field(min_length=1)
    provider_args: dict[str, Any] = Field(default_factory=dict, alias="providerArgs")
    tools: list[Tool] | None = None
    tool_choice: ToolChoice = Field(default=None, alias="toolChoice")
    generation_config: dict[str, Any] | None = Field(default=None, alias="generationConfig")
    # A thread to continue (threads.py): Assistants and LLM Query; absent -> a new thread
    # (Assistants) or none (LLM Query).
    thread_id: ThreadId | None = None
    # A system message sent before the thread's history on this run, never stored in it.
    instructions: str | None = Field(default=None, max_length=256_000)
    # A stored assistant (assistants.py) whose fields this payload's own fields override.
    assistant_id: AssistantId | None = None

    @field_validator("api_key")
    @classmethod
    def _header_safe_key(cls, key: SecretStr | None) -> SecretStr | None:
        # The message never quotes the key.
        if key is not None and not _HEADER_SAFE.match(key.get_secret_value()):
            raise ValueError("apiKey must be 1-1024 visible ASCII characters (no spaces or CR/LF)")
        return key

    @model_validator(mode="before")
    @classmethod
    def _snake_tool_choice(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tool_choice" in data and "toolChoice" not in data:
            data = {**data, "toolChoice": data["tool_choice"]}
            data.pop("tool_choice")
        return data


class StreamOptions(BaseModel):
    """Project additions that tune one stream."""

    model_config = ConfigDict(populate_by_name=True)

    flush_interval_ms: int | None = Field(default=None, ge=0, le=1000, alias="flushIntervalMs")
    # Capped by MAX_TOOL_ROUNDS; 0 never runs tools (the calls end the stream).
    max_tool_rounds: int | None = Field(default=None, ge=0, le=32, alias="maxToolRounds")
    tool_timeout_seconds: float | None = Field(
        default=None, ge=1, le=300, alias="toolTimeoutSeconds"
    )
    # With stream:false: the provider's own frames in `data.raw_response` (providers/raw.py).
    raw_response: bool = Field(default=False, alias="rawResponse")


class StreamRequest(BaseModel):
    """Body of `POST /stream/create` and `POST /llm/query`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    # `lambda: []`, not `list`: cheaper at import (docs/architecture.md decision 31).
    channels: list[ChannelName] = Field(default_factory=lambda: [])
    action_name: ActionName = Field(default=None, alias="actionName")
    payload: Payload
    options: StreamOptions = Field(default_factory=StreamOptions)

    @model_validator(mode="after")
    def _streaming_needs_targets(self) -> StreamRequest:
        if self.payload.stream:
            if not self.channels:
                raise ValueError("channels must be a non-empty list when payload.stream is true")
            if not self.action_name:
                raise ValueError("actionName is required when payload.stream is true")
        return self


class StopRequest(BaseModel):
    """Body of `POST /llm/query/stop`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    stream_id: str = Field(alias="streamId", min_length=1, max_length=128)
    # A page stops with its subscribe token instead of the app key (Klai's llmQueryStop).
    token: StrictStr | None = None


# RunStopRequest, AssistantBody and TokenRequest are the bodies of routes loaded on first
# use (api/app.py): `defer_build` builds them then, not at every cold start (decision 40).


class RunStopRequest(BaseModel):
    """Body of `POST /stream/create/assistants/stop` (Klai): both ids required."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    thread_id: ThreadId = Field(alias="threadId")
    run_id: RunId = Field(alias="runId")


class AssistantBody(BaseModel):
    """Body of `POST /assistants` and `PUT /assistants/{id}`: a named assistant, its fields
    validated as the same fields of a Klai payload. Unknown fields are refused (a typo
    would otherwise be stored as nothing)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)

    api_key: SecretStr | None = Field(default=None, alias="apiKey", exclude=True)
    name: str = Field(min_length=1, max_length=256)
    instructions: str | None = Field(default=None, max_length=256_000)
    model: str | None = Field(default=None, min_length=1, max_length=MAX_MODEL_CHARS)
    provider: str | None = Field(default=None, min_length=1, max_length=64)
    tools: list[Tool] | None = Field(default=None, max_length=128)
    provider_args: dict[str, Any] | None = Field(default=None, alias="providerArgs")


class TokenRequest(BaseModel):
    """Body of `POST /channels/token`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    channels: list[ChannelName] = Field(min_length=1, max_length=100)
    # Strict: `true` would be a one-second token, `"60"` is not the integer the schema says.
    ttl: StrictInt | None = Field(default=None, gt=0)
