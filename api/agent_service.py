"""Agent use cases shared by the flat and the ElevenLabs routes: create, update, present.

The ElevenLabs ``conversation_config`` maps onto agent columns where a setting has a meaning here
(``CONVERSATION_CONFIG_MAP``); everything else is kept verbatim in ``extra_config`` and merged back
into the ``conversation_config`` the GET returns, so an ElevenLabs client round-trips its settings.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import conflict, flush_or_conflict, not_found
from call.playbook import starter_playbook
from call.playbook_check import check_playbook
from config import BENCH_PROVIDERS, Settings, bench_provider_refusal
from models import Agent, AgentTool, AgentVersion, KnowledgeDocument
from schemas import (
    AccessInfo,
    AgentCreate,
    AgentMetadata,
    AgentResponse,
    AgentUpdate,
    AgentVersionResponse,
    AgentVersionSummary,
    ElevenLabsAgentCreate,
    Playbook,
    ProviderOverrides,
    ToolCreate,
    ToolResponse,
)
from storage.agent_versions import (
    TOOL_FIELDS,
    agent_from_spec,
    attach_documents,
    record_version,
    versioned_columns,
)

DEFAULT_AGENT_NAME = "Untitled agent"

# ElevenLabs conversation_config path -> agent column.
CONVERSATION_CONFIG_MAP: dict[tuple[str, ...], str] = {
    ("agent", "prompt", "prompt"): "system_prompt",
    ("agent", "prompt", "llm"): "llm_model",
    ("agent", "prompt", "temperature"): "temperature",
    ("agent", "first_message"): "first_message",
    ("agent", "language"): "language",
    ("tts", "voice_id"): "voice_id",
    ("asr", "keywords"): "stt_keywords",
    ("turn", "turn_timeout"): "silence_timeout_sec",
    ("conversation", "max_duration_seconds"): "max_call_duration_sec",
}
_NULLABLE_COLUMNS = {"voice_id", "llm_model"}
# ElevenLabs conversation_config path -> a key of the agent's turn_settings (merged, not replaced).
TURN_SETTINGS_MAP: dict[tuple[str, ...], str] = {("turn", "turn_eagerness"): "turn_eagerness"}


# ---------------------------------------------------------------- presenting


def unix_secs(agent_or_row: Any, attr: str) -> int:
    return int(getattr(agent_or_row, attr).timestamp())


MASKED = "********"


def masked_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """A tool's config as the API shows it: header values hidden, like webhook secrets.

    Headers carry credentials (``Authorization: Bearer …``); they are write-only. A PATCH that sends a
    header back as ``********`` keeps the stored value (``unmask_config``).
    """
    shown = dict(config or {})
    headers = shown.get("headers")
    if isinstance(headers, dict):
        shown["headers"] = {name: MASKED for name in headers}
    return shown


def unmask_config(new: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """``new`` with every ``********`` header value replaced by the stored one (ValueError if none)."""
    headers = new.get("headers")
    if not isinstance(headers, dict):
        return new
    old = (stored or {}).get("headers") or {}
    restored = {}
    for name, value in headers.items():
        if value == MASKED:
            if name not in old:
                raise ValueError(f"config.headers.{name} is masked; send its real value")
            value = old[name]
        restored[name] = value
    return {**new, "headers": restored}


def to_tool_response(tool: AgentTool) -> ToolResponse:
    return ToolResponse(
        id=tool.id,
        agent_id=tool.agent_id,
        name=tool.name,
        description=tool.description,
        kind=tool.kind,
        parameters=tool.parameters,
        config=masked_config(tool.config),
        enabled=tool.enabled,
        created_at=tool.created_at,
        updated_at=tool.updated_at,
    )


def to_conversation_config(agent: Agent) -> dict[str, Any]:
    """The agent in ElevenLabs terms: the stored extras overlaid with the mapped columns."""
    config = copy.deepcopy(agent.extra_config.get("conversation_config") or {})
    for path, column in CONVERSATION_CONFIG_MAP.items():
        _set_path(config, path, getattr(agent, column))
    for path, key in TURN_SETTINGS_MAP.items():
        if key in (agent.turn_settings or {}):
            _set_path(config, path, agent.turn_settings[key])
    return config


def to_agent_response(agent: Agent) -> AgentResponse:
    created, updated = unix_secs(agent, "created_at"), unix_secs(agent, "updated_at")
    extra = agent.extra_config or {}
    return AgentResponse(
        id=agent.id,
        agent_id=agent.id,
        name=agent.name,
        system_prompt=agent.system_prompt,
        first_message=agent.first_message,
        voice_id=agent.voice_id,
        interrupt_enabled=agent.interrupt_enabled,
        language=agent.language,
        llm_model=agent.llm_model,
        temperature=agent.temperature,
        max_call_duration_sec=agent.max_call_duration_sec,
        silence_timeout_sec=agent.silence_timeout_sec,
        turn_settings=agent.turn_settings,
        providers=agent.providers,
        builtin_tools=agent.builtin_tools,
        transfer_number=agent.transfer_number,
        data_collection=agent.data_collection,
        stt_keywords=list(agent.stt_keywords or []),
        voicemail_detection=agent.voicemail_detection,
        voicemail_action=agent.voicemail_action,
        voicemail_message=agent.voicemail_message,
        dtmf_navigation=agent.dtmf_navigation,
        playbook=agent.playbook,
        tools=[to_tool_response(t) for t in sorted(agent.tools, key=lambda t: t.name)],
        knowledge_base_ids=[d.id for d in sorted(agent.documents, key=lambda d: d.created_at)],
        created_at=agent.created_at,
        updated_at=agent.updated_at,
        conversation_config=to_conversation_config(agent),
        metadata=AgentMetadata(created_at_unix_secs=created, updated_at_unix_secs=updated),
        platform_settings=extra.get("platform_settings"),
        workflow=agent.playbook or extra.get("workflow"),
        tags=list(extra.get("tags") or []),
        access_info=AccessInfo(),
        created_at_unix_secs=created,
        updated_at_unix_secs=updated,
    )


# ---------------------------------------------------------------- loading


async def get_agent_or_404(session: AsyncSession, agent_id: str) -> Agent:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise not_found("agent", agent_id)
    return agent


async def require_agent_exists(session: AsyncSession, agent_id: str | None) -> None:
    """For bodies that reference an agent: an unknown agent id is a 404, like an unknown path id."""
    if agent_id is not None and await session.scalar(select(Agent.id).where(Agent.id == agent_id)) is None:
        raise not_found("agent", agent_id)


async def reload(session: AsyncSession, agent: Agent) -> Agent:
    """Flush pending changes (409 on a constraint) and reload the agent with its tools and documents."""
    await flush_or_conflict(session, "conflicts with existing data")
    await session.refresh(agent)
    await session.refresh(agent, ["tools", "documents"])
    return agent


# ---------------------------------------------------------------- writing


def new_tool(agent_id: str, body: ToolCreate) -> AgentTool:
    return AgentTool(
        agent_id=agent_id,
        name=body.name,
        description=body.description,
        kind=body.kind,
        parameters=body.parameters,
        config=body.config,
        enabled=body.enabled,
    )


def _flat_columns(body: AgentCreate | AgentUpdate, fields: Iterable[str]) -> dict[str, Any]:
    """Column values of the given body fields (nested models dumped to plain JSON)."""
    values: dict[str, Any] = {}
    for name in fields:
        value = getattr(body, name)
        if name in ("turn_settings", "providers"):
            value = value.model_dump(exclude_none=True)
        elif name == "data_collection":  # "qualifies" stored only when set (analytics' qualified step)
            value = [f.model_dump(exclude={"qualifies"} if not f.qualifies else set()) for f in value]
        elif name == "builtin_tools":
            value = list(value)
        values[name] = value
    return values


_COLUMN_FIELDS = (
    "name",
    "system_prompt",
    "first_message",
    "voice_id",
    "interrupt_enabled",
    "language",
    "llm_model",
    "temperature",
    "max_call_duration_sec",
    "silence_timeout_sec",
    "turn_settings",
    "providers",
    "builtin_tools",
    "transfer_number",
    "data_collection",
    "stt_keywords",
    "voicemail_detection",
    "voicemail_action",
    "voicemail_message",
    "dtmf_navigation",
)


def refuse_bench_providers(providers: ProviderOverrides | None, settings: Settings) -> None:
    """422 for an agent that selects a benchmark stand-in while ALLOW_BENCH_PROVIDERS is off."""
    if providers is None or settings.allow_bench_providers:
        return
    chosen = providers.model_dump(exclude_none=True)
    errors = [
        {
            "loc": ("body", "providers", kind),
            "msg": bench_provider_refusal(f"providers.{kind}", name),
            "type": "value_error",
        }
        for kind, name in chosen.items()
        if name in BENCH_PROVIDERS
    ]
    if errors:
        raise RequestValidationError(errors)


STARTER_TOOLS = ("book_meeting", "end_call")  # what the starter playbook uses, enabled with it


def checked_playbook(
    value: Playbook | str | None, builtin_tools: list[str], tool_names: Iterable[str]
) -> tuple[dict[str, Any] | None, list[str]]:
    """(the playbook to store, the builtin tools with what the starter needs): 422 with the path of
    every problem (an unknown stage, tool, intent or template variable)."""
    if value is None:
        return None, builtin_tools
    if value == "starter":
        raw = starter_playbook()
        builtin_tools = [*builtin_tools, *(t for t in STARTER_TOOLS if t not in builtin_tools)]
    else:
        assert isinstance(value, Playbook)
        raw = value.model_dump(mode="json", exclude_none=True)
    try:
        raw = Playbook.model_validate(raw).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:  # only a broken starter file gets here
        raise _validation_error(exc, ("body", "playbook")) from None
    problems = check_playbook(raw, [*builtin_tools, *tool_names])
    if problems:
        raise RequestValidationError(
            [
                {"loc": ("body", "playbook", *where), "msg": msg, "type": "value_error"}
                for where, msg in problems
            ]
        )
    return raw, builtin_tools


async def create_agent(
    session: AsyncSession, body: AgentCreate, extra_config: dict[str, Any] | None = None
) -> Agent:
    names = [t.name for t in body.tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise conflict(f"duplicate tool names: {', '.join(duplicates)}")
    playbook, builtin = checked_playbook(body.playbook, list(body.builtin_tools), names)
    agent = Agent(**_flat_columns(body, _COLUMN_FIELDS), extra_config=extra_config or {})
    agent.playbook, agent.builtin_tools = playbook, builtin
    session.add(agent)
    await flush_or_conflict(session, "conflicts with existing data")
    session.add_all(new_tool(agent.id, t) for t in body.tools)
    await copy_documents(session, agent, body.knowledge_base_ids)
    agent = await reload(session, agent)
    await record_version(session, agent, "created")  # version 1
    return agent


async def update_agent(session: AsyncSession, agent: Agent, body: AgentUpdate) -> Agent:
    changes = body.model_fields_set
    flat_fields = [f for f in _COLUMN_FIELDS if f in changes and f not in ("turn_settings", "providers")]
    for column, value in _flat_columns(body, flat_fields).items():
        setattr(agent, column, value)
    # turn_settings / providers follow JSON merge patch: keys sent replace, keys sent as null are removed.
    for name in ("turn_settings", "providers"):
        if name in changes:
            merge_patch(agent, name, getattr(body, name))
    if body.conversation_config is not None:
        apply_conversation_config(agent, body.conversation_config, loc=("body", "conversation_config"))
    extra = dict(agent.extra_config or {})
    if body.platform_settings is not None:
        extra["platform_settings"] = deep_merge(extra.get("platform_settings") or {}, body.platform_settings)
    if body.workflow is not None:
        extra["workflow"] = body.workflow
    if body.tags is not None:
        extra["tags"] = body.tags
    if extra != agent.extra_config:
        agent.extra_config = extra
    if "playbook" in changes or "builtin_tools" in changes:
        # a playbook is checked against the tools the agent has once the update is applied
        sent = body.playbook if "playbook" in changes else _stored_playbook(agent.playbook)
        custom = [t.name for t in agent.tools]
        agent.playbook, agent.builtin_tools = checked_playbook(sent, list(agent.builtin_tools), custom)
    if body.knowledge_base_ids:
        await copy_documents(session, agent, body.knowledge_base_ids)
    agent = await reload(session, agent)
    await record_version(session, agent)  # none when nothing changed
    return agent


async def record_change(session: AsyncSession, agent_id: str, description: str) -> None:
    """A new version of the agent after a change to its tools or knowledge (none if nothing changed)."""
    agent = await session.get(Agent, agent_id)
    if agent is not None:
        await record_version(session, agent, description)


def _stored_playbook(stored: dict[str, Any] | None) -> Playbook | None:
    return Playbook.model_validate(stored) if stored else None


async def copy_documents(session: AsyncSession, agent: Agent, document_ids: list[str]) -> None:
    """Attach documents by id: ones the agent owns stay; others' are copied into this agent.

    Copies carry the text and ``status="pending"`` with no chunks: the knowledge store embeds them.
    An unknown id is a 404 and nothing is copied.
    """
    if not document_ids:
        return
    wanted = list(dict.fromkeys(document_ids))
    found = {
        d.id: d
        for d in (
            await session.scalars(select(KnowledgeDocument).where(KnowledgeDocument.id.in_(wanted)))
        ).all()
    }
    missing = [i for i in wanted if i not in found]
    if missing:
        raise not_found("knowledge document", ", ".join(missing))
    for doc_id in wanted:
        source = found[doc_id]
        if source.agent_id == agent.id:
            source.detached_at = None  # its own, attached again if it was removed
            continue
        session.add(
            KnowledgeDocument(
                agent_id=agent.id,
                name=source.name,
                content_type=source.content_type,
                size_bytes=source.size_bytes,
                text=source.text,
                chunk_count=0,
                status="pending",
            )
        )


# ---------------------------------------------------------------- ElevenLabs dialect


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merge_patch(agent: Agent, name: str, patch: Any) -> None:
    """JSON merge patch of a dict column: keys sent replace, keys sent as null are removed."""
    merged = {**(getattr(agent, name) or {}), **patch.model_dump(exclude_unset=True)}
    setattr(agent, name, {k: v for k, v in merged.items() if v is not None})


def split_conversation_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(agent column values found in the config, the rest of the config to keep verbatim)."""
    rest = copy.deepcopy(config)
    columns: dict[str, Any] = {}
    for path, column in CONVERSATION_CONFIG_MAP.items():
        found, value = _pop_path(rest, path)
        if found and (value is not None or column in _NULLABLE_COLUMNS):
            columns[column] = value
    for path, key in TURN_SETTINGS_MAP.items():
        found, value = _pop_path(rest, path)
        if found:
            columns.setdefault("turn_settings", {})[key] = value
    return columns, rest


def _validation_error(exc: ValidationError, loc: tuple[str, ...]) -> RequestValidationError:
    """Re-home errors of mapped columns under their ElevenLabs path: a 422 that points at the input."""
    reverse = {column: path for path, column in CONVERSATION_CONFIG_MAP.items()}
    reverse.update({f"turn_settings.{key}": path for path, key in TURN_SETTINGS_MAP.items()})
    errors = []
    for err in exc.errors():
        at = tuple(map(str, err["loc"]))
        field = next((f for f in (".".join(at[:2]), ".".join(at[:1])) if f in reverse), None)
        where = (*loc, *reverse[field]) if field else (*loc, *at)
        errors.append({"loc": where, "msg": err["msg"], "type": err["type"]})
    return RequestValidationError(errors)


def apply_conversation_config(agent: Agent, config: dict[str, Any], loc: tuple[str, ...]) -> None:
    """PATCH semantics: the sent conversation_config is deep-merged into the agent's."""
    columns, rest = split_conversation_config(config)
    try:
        checked = AgentUpdate.model_validate(columns)
    except ValidationError as exc:
        raise _validation_error(exc, loc) from None
    for column in checked.model_fields_set:
        if column == "turn_settings":
            merge_patch(agent, column, checked.turn_settings)
        else:
            setattr(agent, column, getattr(checked, column))
    extra = dict(agent.extra_config or {})
    extra["conversation_config"] = deep_merge(extra.get("conversation_config") or {}, rest)
    agent.extra_config = extra


def agent_create_from_elevenlabs(body: ElevenLabsAgentCreate) -> tuple[AgentCreate, dict[str, Any]]:
    """The flat create body and the extra_config equivalent to an ElevenLabs create request."""
    columns, rest = split_conversation_config(body.conversation_config)
    try:
        named = {"name": body.name or DEFAULT_AGENT_NAME, **columns}
        if body.playbook is not None:
            named["playbook"] = body.playbook
        flat = AgentCreate.model_validate(named)
    except ValidationError as exc:
        raise _validation_error(exc, ("body", "conversation_config")) from None
    extra: dict[str, Any] = {"conversation_config": rest}
    if body.platform_settings is not None:
        extra["platform_settings"] = body.platform_settings
    if body.workflow is not None:
        extra["workflow"] = body.workflow
    if body.tags is not None:
        extra["tags"] = body.tags
    return flat, extra


def _set_path(config: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = config
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def _pop_path(config: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = config
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and path[-1] in node:
        return True, node.pop(path[-1])
    return False, None


# ---------------------------------------------------------------- versions


def to_version_summary(version: AgentVersion, latest_number: int) -> AgentVersionSummary:
    return AgentVersionSummary(
        id=version.id,
        agent_id=version.agent_id,
        number=version.number,
        description=version.description,
        config_hash=version.spec_hash,
        restored_from=version.restored_from,
        is_current=version.number == latest_number,
        created_at=version.created_at,
    )


def to_version_response(version: AgentVersion, latest_number: int) -> AgentVersionResponse:
    snapshot = agent_from_spec(version.agent_id, version.spec, version.created_at)
    return AgentVersionResponse(
        **to_version_summary(version, latest_number).model_dump(), config=to_agent_response(snapshot)
    )


async def restore_version(session: AsyncSession, agent: Agent, version: AgentVersion) -> AgentVersion:
    """Make the agent's configuration the version's again, as a new version (``restored_from`` set).

    Columns, tools (with their stored header values) and the knowledge set come back: the version's
    documents are attached again (kept, with their vectors, since a version lists them), the others
    detached."""
    spec = version.spec
    known = set(versioned_columns())
    for name, value in (spec.get("columns") or {}).items():
        if name in known:
            setattr(agent, name, copy.deepcopy(value))
    for tool in list(agent.tools):
        await session.delete(tool)
    await session.flush()
    session.add_all(
        AgentTool(agent_id=agent.id, **{f: copy.deepcopy(t.get(f)) for f in TOOL_FIELDS})
        for t in spec.get("tools") or []
    )
    await attach_documents(session, agent, list(spec.get("knowledge_base_ids") or []))
    await reload(session, agent)
    restored = await record_version(
        session, agent, f"restored version {version.number}", restored_from=version.id
    )
    assert restored is not None
    return restored
