"""Campaigns (ElevenLabs "batch calling"): creating one from a submit body or a lead CSV, its totals,
cancel and retry. The dialer (``telephony.dialer``) works through the recipients this module writes.

Recipient ``status`` keeps to ElevenLabs' vocabulary where it has one (pending, dispatched, in_progress,
completed, voicemail, failed, cancelled) plus ``skipped`` for leads never dialled (do-not-call, invalid
or duplicate number); ``outcome`` says what happened in this service's words.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.phone_numbers import InvalidPhoneNumber, describe
from models import Agent, Campaign, CampaignRecipient, PhoneNumber
from schemas import (
    BatchCallDetailedResponse,
    BatchCallResponse,
    BatchCallSubmit,
    BatchRecipientIn,
    BatchRecipientResponse,
    CallingHours,
    CampaignTotals,
    RetryPolicy,
)
from telephony import dnc
from telephony.outbound import needed_variables
from utils import utcnow

FINAL_STATUSES = ("completed", "voicemail", "failed", "skipped", "cancelled")
ACTIVE_STATUSES = ("pending", "dispatched", "in_progress")
STATUS_OF_OUTCOME = {
    "voicemail": "voicemail",
    "no_answer": "failed",
    "busy": "failed",
    "failed": "failed",
    "dnc": "skipped",
    "invalid_number": "skipped",
    "duplicate": "skipped",
    "cancelled": "cancelled",
}  # any other outcome (meeting_booked, interested, not_interested, …, unknown): "completed"
MAX_CSV_ROWS = 10_000


class CampaignError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def status_for(outcome: str) -> str:
    return STATUS_OF_OUTCOME.get(outcome, "completed")


def unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


# ---------------------------------------------------------------- creating


async def create_campaign(session: AsyncSession, body: BatchCallSubmit) -> Campaign:
    agent = await session.get(Agent, body.agent_id)
    if agent is None:
        raise CampaignError(404, f"agent not found: {body.agent_id}")
    from_number = None
    if body.agent_phone_number_id:
        number = await session.get(PhoneNumber, body.agent_phone_number_id)
        if number is None:
            raise CampaignError(404, f"phone number not found: {body.agent_phone_number_id}")
        from_number = number.phone_number
    _check_variables(agent, body.recipients)
    now = utcnow()
    scheduled = (
        datetime.fromtimestamp(body.scheduled_time_unix, UTC) if body.scheduled_time_unix is not None else now
    )
    retry = body.retry
    hours = body.calling_hours
    campaign = Campaign(
        name=body.call_name,
        agent_id=agent.id,
        phone_number_id=body.agent_phone_number_id,
        from_number=from_number,
        status="pending",
        scheduled_at=max(scheduled, now),
        timezone=body.timezone,
        max_concurrent_calls=body.target_concurrency_limit or 5,
        calls_per_minute=body.calls_per_minute,
        calling_hours_start=hours.start if hours else None,
        calling_hours_end=hours.end if hours else None,
        calling_days=list(hours.days) if hours else [],
        retry_outcomes=list(retry.outcomes),
        retry_delay_sec=retry.delay_sec,
        max_attempts=retry.max_attempts,
        telephony_call_config=(
            body.telephony_call_config.model_dump(exclude_none=True) if body.telephony_call_config else {}
        ),
    )
    session.add(campaign)
    await session.flush()
    # Up to MAX_CSV_ROWS numbers parsed by libphonenumber: CPU work, in a thread.
    rows = await asyncio.to_thread(_recipients, campaign, body.recipients, body.default_region)
    seen: set[str] = set()
    for row in rows:
        if row.outcome is None:
            if row.phone_number in seen:
                _skip(row, "duplicate", "the number appears earlier in this campaign")
            seen.add(row.phone_number)
    listed = await dnc.numbers_on_list(session, [r.phone_number for r in rows if r.outcome is None])
    for row in rows:
        if row.outcome is None and row.phone_number in listed:
            _skip(row, "dnc", "the number is on the do-not-call list")
    session.add_all(rows)
    await session.flush()
    return campaign


def _check_variables(agent: Agent, leads: list[BatchRecipientIn]) -> None:
    """Before anyone is called: every ``{{variable}}`` of the agent's prompt, first message and voicemail
    message must be a column (a variable) of every lead; a 422 names each one missing and where it is used."""
    needed = needed_variables(agent)
    if not needed:
        return
    problems = []
    for name, used_in in needed.items():
        lacking = [i for i, lead in enumerate(leads) if name not in lead.variables()]
        if not lacking:
            continue
        who = (
            "no lead has it"
            if len(lacking) == len(leads)
            else (
                f"{len(lacking)} of {len(leads)} leads lack it, the first is lead {lacking[0] + 1} "
                f"({leads[lacking[0]].phone_number[:40]})"
            )
        )
        problems.append(
            {
                "loc": ["body", "recipients", lacking[0], "dynamic_variables", name],
                "msg": f"the agent's {' and '.join(used_in)} uses {{{{{name}}}}}, but {who}: "
                f"add a {name} column to the leads, or change the agent",
                "type": "missing_variable",
            }
        )
    if problems:
        raise CampaignError(422, problems)


def _skip(row: CampaignRecipient, outcome: str, error: str) -> None:
    row.status, row.outcome, row.error = status_for(outcome), outcome, error


def _recipients(
    campaign: Campaign, leads: list[BatchRecipientIn], default_region: str | None
) -> list[CampaignRecipient]:
    return [_recipient(campaign, i, lead, default_region) for i, lead in enumerate(leads)]


def _recipient(
    campaign: Campaign, position: int, lead: BatchRecipientIn, default_region: str | None
) -> CampaignRecipient:
    row = CampaignRecipient(
        campaign_id=campaign.id,
        position=position,
        phone_number=lead.phone_number.strip()[:64],
        dynamic_variables=lead.variables(),
        status="pending",
        attempts=0,
        next_attempt_at=campaign.scheduled_at,
    )
    try:
        info = describe(lead.phone_number, default_region)
    except InvalidPhoneNumber as exc:
        _skip(row, "invalid_number", str(exc)[:500])
        return row
    row.phone_number = info.e164
    if lead.timezone:
        row.time_zones = [lead.timezone]
    elif info.time_zones:
        row.time_zones = list(info.time_zones)
    else:
        row.time_zones = [campaign.timezone or "UTC"]
    return row


def parse_leads_csv(data: bytes) -> list[BatchRecipientIn]:
    """Leads from a CSV: ``phone_number`` is required, ``timezone`` optional, other columns are variables.
    Up to MAX_CSV_ROWS rows: CPU work, so callers on the event loop run it in a thread."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CampaignError(422, "the CSV must be UTF-8 text") from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise CampaignError(422, f"the CSV cannot be read: {exc}") from None
    if "phone_number" not in header:
        raise CampaignError(422, "the CSV needs a phone_number column (a header row naming the columns)")
    if len(set(header)) != len(header):
        raise CampaignError(422, "the CSV has duplicate column names")
    leads: list[BatchRecipientIn] = []
    try:
        for line, raw in enumerate(reader, start=2):
            if len(leads) >= MAX_CSV_ROWS:
                raise CampaignError(422, f"the CSV has more than {MAX_CSV_ROWS} leads")
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not any(row.values()):
                continue
            variables = {k: v for k, v in row.items() if k and k not in ("phone_number", "timezone")}
            try:
                leads.append(
                    BatchRecipientIn(
                        phone_number=row.get("phone_number") or "-",
                        timezone=row.get("timezone") or None,
                        dynamic_variables=variables,
                    )
                )
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or "row"
                raise CampaignError(422, f"CSV line {line}: {where}: {first.get('msg', 'invalid')}") from None
    except csv.Error as exc:
        raise CampaignError(422, f"the CSV cannot be read: {exc}") from None
    if not leads:
        raise CampaignError(422, "the CSV has no leads")
    return leads


# ---------------------------------------------------------------- reading


async def totals(session: AsyncSession, campaign_ids: list[str]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {cid: Counter() for cid in campaign_ids}
    if not campaign_ids:
        return out
    stmt = (
        select(
            CampaignRecipient.campaign_id,
            CampaignRecipient.status,
            CampaignRecipient.outcome,
            func.count(),
            func.sum(case((CampaignRecipient.attempts > 0, 1), else_=0)),
        )
        .where(CampaignRecipient.campaign_id.in_(campaign_ids))
        .group_by(CampaignRecipient.campaign_id, CampaignRecipient.status, CampaignRecipient.outcome)
    )
    for campaign_id, status, outcome, count, dialled in (await session.execute(stmt)).all():
        counter = out[campaign_id]
        counter["total"] += count
        counter[f"status:{status}"] += count
        if outcome:
            counter[f"outcome:{outcome}"] += count
        counter["dialled"] += int(dialled or 0)
    return out


def to_response(campaign: Campaign, agent_name: str, counts: Counter[str]) -> BatchCallResponse:
    return BatchCallResponse(**_fields(campaign, agent_name, counts))


def _fields(campaign: Campaign, agent_name: str, counts: Counter[str]) -> dict[str, Any]:
    finished = sum(counts[f"status:{s}"] for s in FINAL_STATUSES)
    hours = (
        CallingHours(
            start=campaign.calling_hours_start,
            end=campaign.calling_hours_end,
            days=list(campaign.calling_days or []),
        )
        if campaign.calling_hours_start and campaign.calling_hours_end
        else None
    )
    return {
        "id": campaign.id,
        "name": campaign.name,
        "agent_id": campaign.agent_id,
        "agent_name": agent_name,
        "phone_number_id": campaign.phone_number_id,
        "from_number": campaign.from_number,
        "status": campaign.status,
        "created_at_unix": unix(campaign.created_at),
        "scheduled_time_unix": unix(campaign.scheduled_at),
        "last_updated_at_unix": unix(campaign.updated_at),
        "completed_at_unix": unix(campaign.completed_at),
        "timezone": campaign.timezone,
        "total_calls_scheduled": counts["total"],
        "total_calls_dispatched": counts["dialled"],
        "total_calls_finished": finished,
        "retry_count": campaign.retry_count,
        "telephony_call_config": dict(campaign.telephony_call_config or {}),
        "target_concurrency_limit": campaign.max_concurrent_calls,
        "calls_per_minute": campaign.calls_per_minute,
        "calling_hours": hours,
        "retry": RetryPolicy(
            outcomes=list(campaign.retry_outcomes or []),
            delay_sec=campaign.retry_delay_sec,
            max_attempts=campaign.max_attempts,
        ),
        "totals": CampaignTotals(
            recipients=counts["total"],
            dialled=counts["dialled"],
            by_status={k[7:]: v for k, v in sorted(counts.items()) if k.startswith("status:")},
            by_outcome={k[8:]: v for k, v in sorted(counts.items()) if k.startswith("outcome:")},
        ),
    }


def recipient_response(row: CampaignRecipient) -> BatchRecipientResponse:
    return BatchRecipientResponse(
        id=row.id,
        phone_number=row.phone_number,
        status=row.status,
        outcome=row.outcome,
        error=row.error,
        attempts=row.attempts,
        requeued_reason=row.requeued_reason,
        next_attempt_unix=unix(row.next_attempt_at) if row.status == "pending" else None,
        time_zones=list(row.time_zones or []),
        created_at_unix=unix(row.created_at) or 0,
        updated_at_unix=unix(row.updated_at) or 0,
        conversation_id=row.conversation_id,
        conversation_initiation_client_data={"dynamic_variables": dict(row.dynamic_variables or {})},
    )


async def detailed(session: AsyncSession, campaign: Campaign) -> BatchCallDetailedResponse:
    agent_name = await session.scalar(select(Agent.name).where(Agent.id == campaign.agent_id)) or ""
    counts = (await totals(session, [campaign.id]))[campaign.id]
    rows = (
        await session.scalars(
            select(CampaignRecipient)
            .where(CampaignRecipient.campaign_id == campaign.id)
            .order_by(CampaignRecipient.position)
        )
    ).all()
    return BatchCallDetailedResponse(
        **_fields(campaign, agent_name, counts), recipients=[recipient_response(r) for r in rows]
    )


# ---------------------------------------------------------------- cancel and retry


async def cancel(session: AsyncSession, campaign: Campaign) -> None:
    """No new calls: pending leads end as cancelled; calls already ringing or talking finish normally."""
    if campaign.status in ("completed", "cancelled", "failed"):
        raise CampaignError(409, f"the campaign is already {campaign.status}")
    campaign.status = "cancelled"
    campaign.completed_at = utcnow()
    await session.execute(
        update(CampaignRecipient)
        .where(CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.status == "pending")
        .values(status="cancelled", outcome="cancelled", updated_at=utcnow())
    )


async def pause(session: AsyncSession, campaign: Campaign) -> None:
    """No new calls until resumed; calls already ringing or talking finish, and their retries stay queued."""
    if campaign.status not in ("pending", "in_progress"):
        raise CampaignError(409, f"only a running campaign can be paused: this one is {campaign.status}")
    campaign.status = "paused"
    campaign.updated_at = utcnow()


async def resume(session: AsyncSession, campaign: Campaign) -> None:
    """Dial again where the campaign stopped (its schedule, pacing and calling hours as before)."""
    if campaign.status != "paused":
        raise CampaignError(409, f"only a paused campaign can be resumed: this one is {campaign.status}")
    now = utcnow()
    campaign.status = "pending" if campaign.scheduled_at > now else "in_progress"
    campaign.updated_at = now


async def retry(session: AsyncSession, campaign: Campaign) -> int:
    """Call again the leads that did not pick up, were busy, hit voicemail or failed (ElevenLabs' retry)."""
    if campaign.status in ("pending", "in_progress", "paused"):
        raise CampaignError(409, "the campaign is still running: cancel it or wait until it completes")
    now = utcnow()
    result = await session.execute(
        update(CampaignRecipient)
        .where(
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.status.in_(("failed", "voicemail", "cancelled")),
        )
        .values(status="pending", outcome=None, error=None, attempts=0, next_attempt_at=now, updated_at=now)
    )
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count == 0:
        raise CampaignError(409, "no lead to call again: none failed, was busy, unanswered or voicemail")
    campaign.status = "in_progress"
    campaign.completed_at = None
    campaign.retry_count += 1
    return count
