"""Agent versions: immutable snapshots of an agent's configuration, and which one a call runs.

A version's ``spec`` is what a call needs: every column of the agent (prompt, voice, providers, data
collection, ``extra_config`` with the playbook and the ElevenLabs settings …), its tools with their real
configs, and the ids of its knowledge documents. ``spec_hash`` (SHA-256 of the canonical JSON, tool ids
left out) makes a change that changes nothing make no version. A document removed from the agent while a
version lists it is detached, not deleted (:func:`remove_document`): a call of that version retrieves
from the version's documents only, and a restore attaches them again (:func:`attach_documents`).

A call is stamped with a version when its conversation row is created (:func:`stamp_call`): the
variant a running experiment gives the lead, else the agent's latest version (recorded on the spot when
the agent changed without one, e.g. an agent from before versions). The engine then runs that version
(:func:`agent_for_call`), not the agent's current row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Agent, AgentTool, AgentVersion, Experiment, ExperimentAssignment, KnowledgeDocument
from storage.sql import insert_ignoring_conflict
from utils import new_id, utcnow

_NOT_VERSIONED = {"id", "created_at", "updated_at"}
TOOL_FIELDS = ("name", "description", "kind", "parameters", "config", "enabled")


def versioned_columns() -> list[str]:
    """Every agent column but its id and timestamps (new columns, such as a playbook, are versioned too)."""
    return [c.key for c in Agent.__table__.columns if c.key not in _NOT_VERSIONED]


def agent_spec(agent: Agent) -> dict[str, Any]:
    """The agent's whole configuration as plain JSON (tools and documents must be loaded)."""
    columns = {name: _plain(getattr(agent, name)) for name in versioned_columns()}
    tools = [
        {"id": t.id, **{f: _plain(getattr(t, f)) for f in TOOL_FIELDS}}
        for t in sorted(agent.tools, key=lambda t: t.name)
    ]
    documents = [d.id for d in sorted(agent.documents, key=lambda d: (d.created_at, d.id))]
    return {"columns": columns, "tools": tools, "knowledge_base_ids": documents}


def spec_hash(spec: dict[str, Any]) -> str:
    hashed = {**spec, "tools": [{k: v for k, v in t.items() if k != "id"} for t in spec.get("tools", [])]}
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def describe_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """A short account of what changed between two specs: "system_prompt, voice_id; tools"."""
    if old is None:
        return "created"
    old_cols, new_cols = old.get("columns", {}), new.get("columns", {})
    changed = [k for k in sorted(set(old_cols) | set(new_cols)) if old_cols.get(k) != new_cols.get(k)]
    strip = [{k: v for k, v in t.items() if k != "id"} for t in old.get("tools", [])]
    if strip != [{k: v for k, v in t.items() if k != "id"} for t in new.get("tools", [])]:
        changed.append("tools")
    if old.get("knowledge_base_ids") != new.get("knowledge_base_ids"):
        changed.append("knowledge")
    return ("changed " + ", ".join(changed))[:500] if changed else "no change"


async def latest_version(session: AsyncSession, agent_id: str) -> AgentVersion | None:
    return await session.scalar(
        select(AgentVersion)
        .where(AgentVersion.agent_id == agent_id)
        .order_by(AgentVersion.number.desc())
        .limit(1)
    )


async def record_version(
    session: AsyncSession,
    agent: Agent,
    description: str | None = None,
    *,
    restored_from: str | None = None,
) -> AgentVersion | None:
    """A new version when the agent's spec differs from its latest version's; None for a no-op change.

    The agent's pending changes are flushed first; the caller's transaction commits the version with
    the change, so a change and its version exist together or not at all."""
    await session.flush()
    await session.refresh(agent, ["tools", "documents"])
    spec = agent_spec(agent)
    digest = spec_hash(spec)
    for _ in range(3):  # two writers may race for the next number: the unique key decides, we re-read
        last = await latest_version(session, agent.id)
        if last is not None and last.spec_hash == digest and restored_from is None:
            return None
        values = {
            "id": new_id("agver"),
            "agent_id": agent.id,
            "number": (last.number + 1) if last else 1,
            "spec": spec,
            "spec_hash": digest,
            "description": description or describe_change(last.spec if last else None, spec),
            "restored_from": restored_from,
            "created_at": utcnow(),
        }
        if await insert_ignoring_conflict(session, AgentVersion, values, ["agent_id", "number"]):
            return await session.get(AgentVersion, values["id"])
    raise RuntimeError("could not record an agent version")


async def current_version(session: AsyncSession, agent: Agent) -> AgentVersion:
    """The version equal to the agent as it is now: its latest, or a new one if it changed unrecorded."""
    recorded = await record_version(session, agent, "recorded at a call")
    if recorded is not None:
        return recorded
    last = await latest_version(session, agent.id)
    assert last is not None
    return last


# ---------------------------------------------------------------- knowledge: part of a version


async def listed_by_a_version(session: AsyncSession, agent_id: str, document_id: str) -> bool:
    """Whether any version of the agent lists the document (its spec's ``knowledge_base_ids``)."""
    specs = await session.scalars(select(AgentVersion.spec).where(AgentVersion.agent_id == agent_id))
    return any(document_id in (spec or {}).get("knowledge_base_ids", []) for spec in specs)


async def remove_document(session: AsyncSession, document: KnowledgeDocument) -> bool:
    """Take a document off its agent. While a version lists it, it is only detached (``detached_at``):
    its text and vectors stay, calls of that version still retrieve from it and restoring the version
    attaches it again. True when it was kept (detached); False: nothing lists it, delete it and its
    vectors."""
    if await listed_by_a_version(session, document.agent_id, document.id):
        document.detached_at = utcnow()
        await session.flush()
        return True
    return False


async def attach_documents(session: AsyncSession, agent: Agent, document_ids: list[str]) -> None:
    """The agent's knowledge set becomes exactly these of its own documents (a restore): detached ones
    listed come back, attached ones not listed are detached (kept: the versions that list them still
    do). An id whose document was deleted (before documents were kept) is skipped."""
    wanted = set(document_ids)
    owned = await session.scalars(select(KnowledgeDocument).where(KnowledgeDocument.agent_id == agent.id))
    now = utcnow()
    for document in owned:
        if document.id in wanted and document.detached_at is not None:
            document.detached_at = None
        elif document.id not in wanted and document.detached_at is None:
            document.detached_at = now
    await session.flush()


def agent_from_spec(agent_id: str, spec: dict[str, Any], created_at: datetime) -> Agent:
    """A detached ``Agent`` (never added to a session) configured as the spec says: what a call runs."""
    columns = spec.get("columns", {})
    known = set(versioned_columns())
    agent = Agent(id=agent_id, created_at=created_at, updated_at=created_at)
    for name, value in columns.items():
        if name in known:
            setattr(agent, name, value)
    agent.tools = [
        AgentTool(
            id=t.get("id"),
            agent_id=agent_id,
            created_at=created_at,
            updated_at=created_at,
            **{f: t.get(f) for f in TOOL_FIELDS},
        )
        for t in spec.get("tools", [])
    ]
    agent.documents = [
        KnowledgeDocument(id=doc_id, agent_id=agent_id, name="", created_at=created_at, updated_at=created_at)
        for doc_id in spec.get("knowledge_base_ids", [])
    ]
    return agent


async def agent_for_call(session: AsyncSession, conversation: Any) -> Agent | None:
    """The agent configuration a call runs: its recorded version's, else the agent's current row."""
    if conversation.agent_id is None:
        return None
    if conversation.agent_version_id:
        version = await session.get(AgentVersion, conversation.agent_version_id)
        if version is not None and version.agent_id == conversation.agent_id:
            return agent_from_spec(version.agent_id, version.spec, version.created_at)
    return await session.get(Agent, conversation.agent_id)


# ---------------------------------------------------------------- experiments: which version a call runs


def lead_key(experiment_id: str, lead_number: str) -> str:
    """The lead's sticky key within one experiment (its number is not stored)."""
    digits = "".join(ch for ch in lead_number if ch.isdigit() or ch == "+")
    return hashlib.sha256(f"{experiment_id}:{digits}".encode()).hexdigest()[:32]


def pick_variant(variants: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The variant a key falls in: a point of the key's hash on the weights' total, weights in order."""
    total = sum(int(v["weight"]) for v in variants)
    point = int(key, 16) % total
    for variant in variants:
        point -= int(variant["weight"])
        if point < 0:
            return variant
    return variants[-1]


@dataclass(slots=True)
class VersionChoice:
    version_id: str
    experiment_id: str | None = None
    variant: str | None = None
    lead_key: str | None = None


async def running_experiment(
    session: AsyncSession, agent_id: str, *, campaign_id: str | None, inbound_number: str | None
) -> Experiment | None:
    if campaign_id:
        where = Experiment.campaign_id == campaign_id
    elif inbound_number:
        where = Experiment.phone_number == inbound_number
    else:
        return None
    return await session.scalar(
        select(Experiment)
        .where(where, Experiment.status == "running", Experiment.agent_id == agent_id)
        .order_by(Experiment.created_at.desc())
        .limit(1)
    )


async def choose_version(
    session: AsyncSession,
    agent: Agent,
    *,
    lead_number: str | None,
    campaign_id: str | None = None,
    inbound_number: str | None = None,
) -> VersionChoice:
    if lead_number:
        experiment = await running_experiment(
            session, agent.id, campaign_id=campaign_id, inbound_number=inbound_number
        )
        if experiment is not None and experiment.variants:
            key = lead_key(experiment.id, lead_number)
            variant = pick_variant(experiment.variants, key)
            return VersionChoice(variant["version_id"], experiment.id, variant["label"], key)
    return VersionChoice((await current_version(session, agent)).id)


async def stamp_call(
    session: AsyncSession,
    conversation: Any,
    agent: Agent,
    *,
    lead_number: str | None,
    campaign_id: str | None = None,
    inbound_number: str | None = None,
    version_id: str | None = None,
) -> VersionChoice:
    """Record on a new conversation (flushed, so it has its id) the version its call will run."""
    if version_id is not None:
        choice = VersionChoice(version_id)
    else:
        choice = await choose_version(
            session, agent, lead_number=lead_number, campaign_id=campaign_id, inbound_number=inbound_number
        )
    conversation.agent_version_id = choice.version_id
    if choice.experiment_id is not None:
        assert choice.variant is not None and choice.lead_key is not None
        session.add(
            ExperimentAssignment(
                conversation_id=conversation.id,
                experiment_id=choice.experiment_id,
                variant=choice.variant,
                version_id=choice.version_id,
                lead_key=choice.lead_key,
            )
        )
    return choice


def _plain(value: Any) -> Any:
    """JSON-able copy (lists and dicts copied, so a later change of the agent never edits a snapshot)."""
    return json.loads(json.dumps(value, default=str)) if isinstance(value, (dict, list)) else value
