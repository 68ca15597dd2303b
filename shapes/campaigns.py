"""Shapes of the batch calling (campaigns) API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from shapes.common import Id, Strict
from shapes.outbound import DynamicVariables, ElevenLabsClientData

__all__ = [
    "RETRYABLE_OUTCOMES",
    "BatchCallDetailedResponse",
    "BatchCallResponse",
    "BatchCallSubmit",
    "BatchRecipientIn",
    "BatchRecipientPage",
    "BatchRecipientResponse",
    "CallingHours",
    "CampaignProgress",
    "CampaignTotals",
    "HourMinute",
    "RetryPolicy",
    "RetryableOutcome",
    "TelephonyCallConfig",
    "TimeZoneName",
    "WorkspaceBatchCallsResponse",
]

# screened: a call screener answered and nobody picked up; ivr: a phone menu answered (not navigated)
RETRYABLE_OUTCOMES = ("no_answer", "busy", "voicemail", "failed", "screened", "ivr")
RetryableOutcome = Literal["no_answer", "busy", "voicemail", "failed", "screened", "ivr"]
HourMinute = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["09:00"])]


def _check_zone(value: str | None) -> str | None:
    if value is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}: use an IANA name such as America/New_York") from None
    return value


TimeZoneName = Annotated[
    str, Field(max_length=64, examples=["America/New_York"]), AfterValidator(_check_zone)
]


class CallingHours(Strict):
    """When leads may be called, in each lead's own time zone (from the number or its ``timezone``)."""

    start: HourMinute = "09:00"
    end: HourMinute = "17:00"
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4],
        description="Days of the week, 0 = Monday … 6 = Sunday; empty = every day",
    )

    @model_validator(mode="after")
    def _start_before_end(self) -> CallingHours:
        if self.start >= self.end:
            raise ValueError("calling_hours.start must be before calling_hours.end (same day)")
        return self


class RetryPolicy(Strict):
    outcomes: list[RetryableOutcome] = Field(
        default_factory=lambda: ["no_answer", "busy", "voicemail"],
        description="Outcomes after which a lead is called again",
    )
    delay_sec: int = Field(default=3600, ge=0, le=7 * 86_400, description="Wait before the next attempt")
    max_attempts: int = Field(default=3, ge=1, le=10, description="Calls per lead, the first included")


class BatchRecipientIn(BaseModel):
    """A lead: ElevenLabs ``OutboundCallRecipient`` plus an optional ``timezone``."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, max_length=64)
    phone_number: str = Field(
        min_length=1, max_length=64, description="Invalid numbers end as invalid_number"
    )
    conversation_initiation_client_data: ElevenLabsClientData | None = None
    dynamic_variables: DynamicVariables
    timezone: TimeZoneName | None = None

    def variables(self) -> dict[str, Any]:
        data = self.conversation_initiation_client_data
        return {**self.dynamic_variables, **(data.dynamic_variables if data else {})}


class TelephonyCallConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    ringing_timeout_secs: int | None = Field(default=None, ge=5, le=600)


class BatchCallSubmit(BaseModel):
    """``POST /v1/convai/batch-calling/submit`` (the ElevenLabs body) plus this service's dialing rules.

    Unknown ElevenLabs fields (whatsapp_params, branch_id …) are accepted and ignored, as theirs are.
    """

    model_config = ConfigDict(extra="ignore")

    call_name: str = Field(min_length=1, max_length=200, examples=["Q4 webinar follow-up"])
    agent_id: Id
    agent_phone_number_id: Id | None = Field(default=None, description="Caller ID; else the agent's number")
    recipients: list[BatchRecipientIn] = Field(min_length=1, max_length=10_000)
    scheduled_time_unix: int | None = Field(default=None, ge=0, description="Start time; null/past = now")
    timezone: TimeZoneName | None = Field(
        default=None, description="Calling-hours zone of leads whose number gives none (default UTC)"
    )
    telephony_call_config: TelephonyCallConfig | None = None
    target_concurrency_limit: int | None = Field(default=None, ge=1, le=200, description="Concurrent calls")
    # this service's extensions
    calls_per_minute: int = Field(
        default=30, ge=1, le=6000, description="At most this many dials in any minute"
    )
    calling_hours: CallingHours | None = Field(default=None, description="null = any time")
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy(outcomes=[], max_attempts=1))
    default_region: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2}$",
        description="ISO country of numbers written without +country code, e.g. US",
    )


class BatchRecipientResponse(BaseModel):
    """ElevenLabs ``OutboundCallRecipientResponseModel`` plus outcome and attempts."""

    id: str
    phone_number: str
    status: str = Field(
        description="pending|dispatched|in_progress|completed|voicemail|failed|skipped|cancelled"
    )
    outcome: str | None = Field(
        description="meeting_booked|interested|not_interested|callback_requested|voicemail|screened|ivr|"
        "no_answer|busy|"
        "failed|dnc|invalid_number|duplicate|unknown"
    )
    error: str | None
    attempts: int
    requeued_reason: str | None = Field(
        default=None,
        description="never_connected|server_restart|instance_lost: our failure sent the lead back to the "
        "queue once, without counting an attempt",
    )
    next_attempt_unix: int | None
    time_zones: list[str]
    created_at_unix: int
    updated_at_unix: int
    conversation_id: str | None
    conversation_initiation_client_data: dict[str, Any]


class CampaignTotals(BaseModel):
    recipients: int
    dialled: int = Field(description="Leads called at least once")
    by_status: dict[str, int]
    by_outcome: dict[str, int]


class BatchCallResponse(BaseModel):
    """ElevenLabs ``BatchCallResponse`` plus the dialing rules and per-outcome totals."""

    id: str
    name: str
    agent_id: str
    agent_name: str
    phone_number_id: str | None
    phone_provider: str = "twilio"
    from_number: str | None
    status: str = Field(description="pending|in_progress|paused|completed|cancelled|failed")
    created_at_unix: int
    scheduled_time_unix: int
    last_updated_at_unix: int
    completed_at_unix: int | None
    timezone: str | None
    total_calls_scheduled: int
    total_calls_dispatched: int
    total_calls_finished: int
    retry_count: int
    telephony_call_config: dict[str, Any]
    target_concurrency_limit: int
    calls_per_minute: int
    calling_hours: CallingHours | None
    retry: RetryPolicy
    totals: CampaignTotals


class BatchCallDetailedResponse(BatchCallResponse):
    recipients: list[BatchRecipientResponse]


class WorkspaceBatchCallsResponse(BaseModel):
    batch_calls: list[BatchCallResponse]
    next_doc: str | None = None
    has_more: bool = False


class BatchRecipientPage(BaseModel):
    """``GET …/batch-calling/{id}/recipients``: the leads, filtered, in CSV order, a page at a time."""

    recipients: list[BatchRecipientResponse]
    total: int = Field(description="Leads matching the filters (all pages)")
    has_more: bool
    next_cursor: str | None = None


class CampaignProgress(BaseModel):
    """``GET …/batch-calling/{id}/progress``: what a person watching the campaign reads at a glance."""

    campaign: BatchCallResponse = Field(description="The campaign, as GET …/{id} without its recipients")
    id: str
    status: str = Field(description="pending|in_progress|paused|completed|cancelled|failed")
    total: int = Field(description="Leads in the campaign")
    finished: int = Field(
        description="Leads with a final status (completed, voicemail, failed, skipped, cancelled)"
    )
    dialled: int = Field(description="Leads called at least once")
    calling_now: int = Field(description="Leads whose call is being placed, ringing or talking")
    reached: int = Field(description="Leads where a person talked (outcome meeting_booked, interested, …)")
    booked: int = Field(description="Leads with outcome meeting_booked")
    retrying: int = Field(description="Leads waiting for another attempt after an unanswered or failed call")
    left: int = Field(description="Leads not finished yet (waiting, retrying or on a call)")
    by_status: dict[str, int]
    by_outcome: dict[str, int]
    pace_per_min: float | None = Field(
        description="Leads finished per minute over the last 10 minutes of calling (null: too early to say)"
    )
    calling_hours_open: bool | None = Field(
        description="Some waiting lead may be called now (null: the campaign has no calling hours)"
    )
    next_opening_unix: int | None = Field(description="When calling hours next open, while they are closed")
    expected_finish_unix: int | None = Field(
        description="When the last lead should finish at the current pace, calling only in calling hours "
        "(null: finished, paused, no pace yet, or hours that never open)"
    )
