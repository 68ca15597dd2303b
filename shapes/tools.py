"""Shapes of the tools API (``/v1/convai/tools``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator

from core.phone_numbers import is_phone_number, normalize
from shapes.common import TOOL_NAME_PATTERN, HttpUrlStr, PartialUpdate, Strict, ToolKind

__all__ = [
    "ParametersSchema",
    "ToolCreate",
    "ToolListResponse",
    "ToolResponse",
    "ToolUpdate",
    "WebhookToolConfig",
    "check_tool_update",
]


def _non_local_refs(node: Any, path: str = "parameters") -> list[str]:
    """``$ref`` / ``$dynamicRef`` values that point outside the schema, with where they are."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str) and not value.startswith("#"):
                found.append(f"{path}.{key} = {value!r}")
            else:
                found.extend(_non_local_refs(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(_non_local_refs(item, f"{path}[{index}]"))
    return found


def _check_parameters_schema(schema: dict[str, Any]) -> dict[str, Any]:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"parameters is not a valid JSON Schema: {exc.message}") from None
    # A remote reference would be fetched while a call waits, from wherever it points (SSRF).
    if remote := _non_local_refs(schema):
        raise ValueError(
            "parameters may only reference their own definitions ($ref starting with '#'); "
            f"not local: {', '.join(remote[:5])}"
        )
    if schema.get("type", "object") != "object":
        raise ValueError('parameters must be a JSON Schema of "type": "object"')
    return {"type": "object", **schema}


ParametersSchema = Annotated[
    dict[str, Any],
    Field(
        description="JSON Schema (Draft 2020-12) of the tool's arguments; an object schema.",
        examples=[{"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}],
    ),
    AfterValidator(_check_parameters_schema),
]


class WebhookToolConfig(Strict):
    """``config`` of a ``webhook`` tool: where and how the tool is called."""

    url: HttpUrlStr
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_sec: float = Field(default=5.0, gt=0, le=30)


def _check_tool_config(kind: str | None, config: dict[str, Any] | None) -> dict[str, Any] | None:
    if kind is None or config is None:
        return config
    if kind == "webhook":
        try:
            return WebhookToolConfig.model_validate(config).model_dump()
        except ValidationError as exc:
            problems = "; ".join(
                f"config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"invalid webhook tool config: {problems}") from None
    config = dict(config)
    for key in ("number", "to"):
        number = config.get(key)
        if number is None:
            continue
        if not isinstance(number, str) or not is_phone_number(number):
            raise ValueError(f"config.{key} must be an international phone number such as +14155550123")
        config[key] = normalize(number)
    if kind == "transfer_call":
        _check_transfer_config(config)
    message = config.get("message")
    if message is not None and (not isinstance(message, str) or not 0 < len(message) <= 600):
        raise ValueError("config.message must be a text of 1 to 600 characters")
    return config


def _check_transfer_config(config: dict[str, Any]) -> None:
    """transfer_call: ``mode`` (warm | cold), ``numbers`` the model may choose among, ``ring_timeout_sec``."""
    if config.get("mode") not in (None, "warm", "cold"):
        raise ValueError('config.mode must be "warm" or "cold"')
    numbers = config.get("numbers")
    if numbers is not None:
        if not isinstance(numbers, list) or len(numbers) > 20:
            raise ValueError("config.numbers must be a list of at most 20 phone numbers")
        if not all(isinstance(n, str) and is_phone_number(n) for n in numbers):
            raise ValueError("config.numbers must hold international phone numbers such as +14155550123")
        config["numbers"] = [normalize(n) for n in numbers]
    ring = config.get("ring_timeout_sec")
    if ring is not None and (not isinstance(ring, int) or isinstance(ring, bool) or not 5 <= ring <= 600):
        raise ValueError("config.ring_timeout_sec must be a whole number of seconds from 5 to 600")


class ToolCreate(Strict):
    name: str = Field(pattern=TOOL_NAME_PATTERN, examples=["lookup_account"])
    description: str = Field(default="", max_length=2000)
    kind: ToolKind = "webhook"
    parameters: ParametersSchema = Field(default_factory=lambda: {"type": "object", "properties": {}})
    config: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            'webhook: {"url", "method", "headers" (write-only: shown as ********), "timeout_sec"}; '
            'transfer_call: {"number", "mode" (warm | cold), "numbers" (the model may pick one), '
            '"ring_timeout_sec"}; send_sms: {"number", "message" (a fixed body; may use {{variables}})}'
        ),
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _config_fits_kind(self) -> ToolCreate:
        self.config = _check_tool_config(self.kind, self.config) or {}
        return self


class ToolUpdate(PartialUpdate):
    NON_NULLABLE = frozenset({"name", "description", "kind", "parameters", "config", "enabled"})

    name: str | None = Field(default=None, pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(default=None, max_length=2000)
    kind: ToolKind | None = None
    parameters: ParametersSchema | None = None
    config: dict[str, Any] | None = None
    enabled: bool | None = None


class ToolResponse(BaseModel):
    id: str
    agent_id: str
    name: str
    description: str
    kind: ToolKind | str
    parameters: dict[str, Any]
    config: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class ToolListResponse(BaseModel):
    tools: list[ToolResponse]


def check_tool_update(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """Re-validate a tool's config against its (possibly new) kind after a PATCH."""
    return _check_tool_config(kind, config) or {}
