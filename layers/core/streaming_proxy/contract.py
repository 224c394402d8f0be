"""Request bodies of the public contract (docs/api-contract.md), validated at the edge."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

Role = Literal["system", "user", "assistant", "tool", "developer"]


class Message(BaseModel):
    """An OpenAI-style chat message; `content` is a string or a list of parts (text, images)."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class Tool(BaseModel):
    """An OpenAI function tool: `{"type": "function", "function": {name, parameters, ...}}`."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = "function"
    function: dict[str, Any]

    @model_validator(mode="after")
    def _has_name(self) -> Tool:
        name = self.function.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("tool.function.name must be a non-empty string")
        return self


class Payload(BaseModel):
    """The LLM request inside a Klai body."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    provider: str = "openai"
    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    stream: bool = True
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    provider_args: dict[str, Any] = Field(default_factory=dict, alias="providerArgs")
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = Field(default=None, alias="toolChoice")
    generation_config: dict[str, Any] | None = Field(default=None, alias="generationConfig")

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


class StreamRequest(BaseModel):
    """Body of `POST /stream/create` and `POST /llm/query`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    channels: list[str] = Field(default_factory=list)
    action_name: str | None = Field(default=None, alias="actionName", min_length=1, max_length=200)
    payload: Payload
    options: StreamOptions = Field(default_factory=StreamOptions)

    @model_validator(mode="after")
    def _streaming_needs_targets(self) -> StreamRequest:
        if self.payload.stream:
            if not self.channels:
                raise ValueError("channels must be a non-empty list when payload.stream is true")
            if not self.action_name:
                raise ValueError("actionName is required when payload.stream is true")
        for channel in self.channels:
            if not channel or len(channel) > 256:
                raise ValueError("each channel must be 1-256 characters")
        return self


class StopRequest(BaseModel):
    """Body of `POST /llm/query/stop`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    stream_id: str = Field(alias="streamId", min_length=1, max_length=128)


class TokenRequest(BaseModel):
    """Body of `POST /channels/token`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    channels: list[str] = Field(min_length=1)
    ttl: int | None = Field(default=None, gt=0)
