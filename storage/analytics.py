"""Analytics, kept current as calls end: each ended call adds itself to ``analytics_rollup``, once.

:func:`record_call` runs when a call's end is final (after the post-call analysis, or when Twilio
reports a call that never connected): it claims the call in ``analytics_recorded`` (primary key: a call
is counted once, whichever instance or retry gets there), works out the call's facts and adds them with
one multi-row ``INSERT … ON CONFLICT DO UPDATE`` (PostgreSQL and SQLite). The analytics API reads only
the rollup, never ``conversations``.

A call's facts (the funnel, in order):

- ``calls``: every call (outbound dialled, inbound or web received).
- ``answered``: it connected: the media stream started, or Twilio reported it ``completed``.
- ``human``: answered by a person: not a machine or fax, not voicemail/screened/ivr; an outbound call
  needs Twilio or the engine to say ``human`` or the caller to have spoken.
- ``conversations``: a person talked with the agent for 30 s or more (``duration_sec``).
- ``qualified``: a conversation in which every qualification field was collected: the version's
  ``data_collection`` items marked ``"qualifies": true`` (none marked: all of them; none at all: never
  qualified), plus any playbook field marked ``"qualifies": true`` (the playbook's collected fields
  land in ``collected_data`` like the others). A field counts as collected when its value is not empty.
- ``booked``: the outcome is ``meeting_booked`` (counted whatever the steps before).

Dimensions (``AnalyticsRollup.dim``): ``all``; ``local_hour`` (the hour of the lead's own day the call
was placed in: the campaign lead's first time zone, else the zone of the caller's number); ``stage``
(``conversations.ended_stage``); ``outcome``; ``objection`` (``speech.objections``). The ``all`` rows
also carry each agent turn's voice-to-voice latency as a fixed-bucket histogram (``v2v_00`` …
``v2v_36``: 50 ms wide bins below 1.5 s, 250 ms to 3 s, one bin beyond), so a latency percentile per
bucket is one GROUP BY over the same rows as a count, never a row per bin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.phone_numbers import InvalidPhoneNumber, describe
from models import (
    V2V_COLUMNS,
    Agent,
    AgentVersion,
    AnalyticsRecorded,
    AnalyticsRollup,
    CampaignRecipient,
    Conversation,
    ConversationTurn,
    ExperimentAssignment,
)
from speech.objections import objections
from storage.call_store import CONVERSATION_ONLY
from storage.sql import insert_ignoring_conflict, upsert_adding
from utils import utcnow

log = logging.getLogger(__name__)

CONVERSATION_MIN_SEC = 30.0
NOT_A_PERSON_OUTCOMES = frozenset({"voicemail", "screened", "ivr"})
FUNNEL_MEASURES = ("calls", "answered", "human", "conversations", "qualified", "booked", "call_seconds")
ROLLUP_KEY = ["grain", "dim", "bucket", "agent_id", "campaign_id", "version_id", "experiment_id", "dim_value"]
DIMENSIONS = ("all", "local_hour", "stage", "outcome", "objection")
ADDED = [*FUNNEL_MEASURES, *V2V_COLUMNS]  # what a call's UPSERT adds to a row that exists


# ---------------------------------------------------------------- latency bins


def v2v_bin(ms: float) -> int:
    """The lower edge (ms) of the bin a voice-to-voice latency falls in: 50 ms wide below 1.5 s, 250 ms
    wide to 3 s, one bin beyond (37 bins)."""
    if ms < 1500:
        return int(max(ms, 0) // 50) * 50
    if ms < 3000:
        return int(ms // 250) * 250
    return 3000


def bin_index(lower: int) -> int:
    """The histogram column (``V2V_COLUMNS``) of a bin's lower edge."""
    return lower // 50 if lower < 1500 else 30 + (lower - 1500) // 250 if lower < 3000 else 36


def bin_lower(index: int) -> int:
    return index * 50 if index < 30 else 1500 + (index - 30) * 250 if index < 36 else 3000


def bin_width(lower: int) -> int:
    return 50 if lower < 1500 else 250 if lower < 3000 else 0


def percentile_from_bins(bins: dict[int, int], q: float) -> float | None:
    """The q-quantile (0..1) of binned latencies: the middle of the bin it falls in (3000 beyond 3 s)."""
    total = sum(bins.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for lower in sorted(bins):
        seen += bins[lower]
        if seen >= rank:
            return lower + bin_width(lower) / 2
    return float(max(bins))


# ---------------------------------------------------------------- one call's facts


@dataclass(slots=True)
class CallFacts:
    bucket: datetime  # the UTC hour the call was placed in
    agent_id: str = ""
    campaign_id: str = ""
    version_id: str = ""
    experiment_id: str = ""
    answered: bool = False
    human: bool = False
    conversation: bool = False
    qualified: bool = False
    booked: bool = False
    call_seconds: float = 0.0
    local_hour: int | None = None
    ended_stage: str | None = None
    outcome: str | None = None
    objections: list[str] = field(default_factory=list)
    v2v_ms: list[float] = field(default_factory=list)


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


AGENT_LEVEL = "*"  # campaign, version and experiment of the rows keyed by the agent alone


def rollup_rows(facts: CallFacts) -> list[dict[str, Any]]:
    """The rollup rows one call adds, to its hour, its day and its month (the live recorder and the bulk
    loader share this). Each comes twice: keyed by agent, campaign, version and experiment, and keyed by
    the agent alone (campaign, version and experiment ``*``), which the queries without a campaign,
    version or experiment filter read: their row count then follows the agents, not the campaigns and
    versions. The agent-alone rows come first, so two calls of one agent ending at once lock their
    shared rows in the same order (no deadlock)."""
    keyed = _rows(facts, "h", facts.bucket)
    alone = [
        {**row, "campaign_id": AGENT_LEVEL, "version_id": AGENT_LEVEL, "experiment_id": AGENT_LEVEL}
        for row in keyed
    ]
    hourly = alone + keyed
    day = facts.bucket.replace(hour=0)
    month = day.replace(day=1)
    return (
        hourly
        + [{**row, "grain": "d", "bucket": day} for row in hourly]
        + [{**row, "grain": "m", "bucket": month} for row in hourly]
    )


def _rows(facts: CallFacts, grain: str, bucket: datetime) -> list[dict[str, Any]]:
    base = {
        "grain": grain,
        "bucket": bucket,
        "agent_id": facts.agent_id,
        "campaign_id": facts.campaign_id,
        "version_id": facts.version_id,
        "experiment_id": facts.experiment_id,
    }
    funnel = {
        "calls": 1,
        "answered": int(facts.answered),
        "human": int(facts.human),
        "conversations": int(facts.conversation),
        "qualified": int(facts.qualified),
        "booked": int(facts.booked),
        "call_seconds": float(facts.call_seconds),
    }
    no_latency = dict.fromkeys(V2V_COLUMNS, 0)
    funnel |= no_latency  # every row of one INSERT names the same columns
    latency = dict(no_latency)
    for ms in facts.v2v_ms:
        latency[V2V_COLUMNS[bin_index(v2v_bin(ms))]] += 1
    rows = [{**base, "dim": "all", "dim_value": "", **funnel, **latency}]
    if facts.local_hour is not None:
        rows.append({**base, "dim": "local_hour", "dim_value": str(facts.local_hour), **funnel})
    rows.append({**base, "dim": "stage", "dim_value": (facts.ended_stage or "")[:64], **funnel})
    rows.append({**base, "dim": "outcome", "dim_value": (facts.outcome or "unknown")[:64], **funnel})
    for objection in sorted(set(facts.objections)):
        rows.append({**base, "dim": "objection", "dim_value": objection, **funnel})
    return rows


def qualification_fields(columns: dict[str, Any]) -> list[str]:
    """The fields whose collection qualifies a call (see the module's docstring)."""
    items = [f for f in columns.get("data_collection") or [] if isinstance(f, dict) and f.get("name")]
    marked = [f["name"] for f in items if f.get("qualifies")]
    names = marked or [f["name"] for f in items]
    playbook = columns.get("playbook") or (columns.get("extra_config") or {}).get("playbook")
    names += [n for n in _marked_fields(playbook) if n not in names]
    return names


def _marked_fields(node: Any) -> list[str]:
    """Names of the dicts anywhere in a playbook that carry ``"qualifies": true``."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("qualifies") is True and isinstance(node.get("name"), str):
            found.append(node["name"])
        for value in node.values():
            found += _marked_fields(value)
    elif isinstance(node, list):
        for value in node:
            found += _marked_fields(value)
    return found


def is_collected(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def local_hour(moment: datetime, zones: list[str]) -> int | None:
    for name in zones:
        try:
            return moment.astimezone(ZoneInfo(name)).hour
        except (KeyError, ValueError):
            continue
    return None


def call_facts(
    conversation: Conversation,
    *,
    turns: list[tuple[str, str, str | None, float | None, float | None]],
    fields: list[str],
    zones: list[str],
    experiment_id: str | None,
) -> CallFacts:
    """``turns``: (role, text, intent, user_speech_end_ms, first_frame_sent_ms) of each turn."""
    placed = conversation.created_at or utcnow()
    caller_spoke = any(role == "user" and text for role, text, *_ in turns)
    answered = conversation.started_at is not None or conversation.status == "completed"
    human = (
        answered
        and conversation.answered_by not in ("machine", "fax")
        and conversation.outcome not in NOT_A_PERSON_OUTCOMES
        and conversation.end_reason != "never_connected"
        and (conversation.direction != "outbound" or conversation.answered_by == "human" or caller_spoke)
    )
    talked = human and (conversation.duration_sec or 0.0) >= CONVERSATION_MIN_SEC
    collected = conversation.collected_data or {}
    qualified = talked and bool(fields) and all(is_collected(collected.get(name)) for name in fields)
    v2v = [
        sent - spoke
        for role, _text, _intent, spoke, sent in turns
        if role == "agent" and spoke is not None and sent is not None and sent >= spoke
    ]
    return CallFacts(
        bucket=hour_of(placed),
        agent_id=conversation.agent_id or "",
        campaign_id=conversation.campaign_id or "",
        version_id=conversation.agent_version_id or "",
        experiment_id=experiment_id or "",
        answered=answered,
        human=human,
        conversation=talked,
        qualified=qualified,
        booked=conversation.outcome == "meeting_booked",
        call_seconds=float(conversation.duration_sec or 0.0) if answered else 0.0,
        local_hour=local_hour(conversation.started_at or placed, zones),
        ended_stage=conversation.ended_stage,
        outcome=conversation.outcome,
        objections=objections((text, intent) for role, text, intent, *_ in turns if role == "user"),
        v2v_ms=v2v,
    )


async def lead_zones(session: AsyncSession, conversation: Conversation) -> list[str]:
    if conversation.campaign_recipient_id:
        zones = await session.scalar(
            select(CampaignRecipient.time_zones).where(
                CampaignRecipient.id == conversation.campaign_recipient_id
            )
        )
        if zones:
            return list(zones)
    lead = conversation.to_number if conversation.direction == "outbound" else conversation.from_number
    if not lead or not lead.startswith("+"):
        return []
    try:
        return list(describe(lead).time_zones)
    except InvalidPhoneNumber:
        return []


async def _version_columns(session: AsyncSession, conversation: Conversation) -> dict[str, Any]:
    if conversation.agent_version_id:
        spec = await session.scalar(
            select(AgentVersion.spec).where(AgentVersion.id == conversation.agent_version_id)
        )
        if spec:
            return dict(spec.get("columns") or {})
    if conversation.agent_id:
        agent = await session.get(Agent, conversation.agent_id)
        if agent is not None:
            return {"data_collection": agent.data_collection, "extra_config": agent.extra_config}
    return {}


async def record_call(session: AsyncSession, conversation: Conversation) -> bool:
    """Add an ended call to the rollup, once; False if it was counted already. Runs in the caller's
    transaction, so the count and the call's final state commit together."""
    claimed = await insert_ignoring_conflict(
        session,
        AnalyticsRecorded,
        {"conversation_id": conversation.id, "recorded_at": utcnow()},
        ["conversation_id"],
    )
    if not claimed:
        return False
    turns = [
        tuple(row)
        for row in (
            await session.execute(
                select(
                    ConversationTurn.role,
                    ConversationTurn.text,
                    ConversationTurn.intent,
                    ConversationTurn.user_speech_end_ms,
                    ConversationTurn.first_frame_sent_ms,
                ).where(ConversationTurn.conversation_id == conversation.id)
            )
        ).all()
    ]
    experiment_id = await session.scalar(
        select(ExperimentAssignment.experiment_id).where(
            ExperimentAssignment.conversation_id == conversation.id
        )
    )
    facts = call_facts(
        conversation,
        turns=turns,  # type: ignore[arg-type]
        fields=qualification_fields(await _version_columns(session, conversation)),
        zones=await lead_zones(session, conversation),
        experiment_id=experiment_id,
    )
    await upsert_adding(session, AnalyticsRollup, rollup_rows(facts), ROLLUP_KEY, ADDED)
    return True


async def count_ended_call(db: Any, conversation_id: str) -> None:
    """:func:`record_call` in a transaction of its own, after the call's end committed; a failure is
    logged and never fails the call's own end (the call then stays uncounted)."""
    try:
        async with db.session() as session:
            conversation = await session.get(Conversation, conversation_id, options=CONVERSATION_ONLY)
            if conversation is not None:
                await record_call(session, conversation)
    except Exception as exc:
        log.warning(
            "call not counted in analytics",
            extra={"fields": {"conversation_id": conversation_id, "error": type(exc).__name__}},
        )


async def backfill(db: Any, batch: int = 500) -> int:
    """Count the ended calls the rollup does not hold yet (e.g. calls from before analytics existed);
    how many were added. Safe to run while calls end: each call is still counted once."""
    added = 0
    after = ""
    while True:
        async with db.session() as session:
            ids = list(
                await session.scalars(
                    select(Conversation.id)
                    .outerjoin(AnalyticsRecorded, AnalyticsRecorded.conversation_id == Conversation.id)
                    .where(
                        AnalyticsRecorded.conversation_id.is_(None),
                        Conversation.id > after,
                        (Conversation.call_state == "ENDED")
                        | Conversation.status.in_(("busy", "no_answer", "failed", "canceled")),
                    )
                    .order_by(Conversation.id)
                    .limit(batch)
                )
            )
        if not ids:
            return added
        for conversation_id in ids:
            async with db.session() as session:
                conversation = await session.get(Conversation, conversation_id, options=CONVERSATION_ONLY)
                if conversation is not None and await record_call(session, conversation):
                    added += 1
        after = ids[-1]


def main() -> None:  # python -m storage.analytics backfill
    import asyncio
    import sys

    from config import get_settings
    from storage.db import Database

    if sys.argv[1:] != ["backfill"]:
        raise SystemExit("usage: python -m storage.analytics backfill")

    async def run() -> int:
        db = Database(get_settings().database_url)
        try:
            return await backfill(db)
        finally:
            await db.dispose()

    print(f"{asyncio.run(run())} calls added to the analytics rollup")


if __name__ == "__main__":
    main()
