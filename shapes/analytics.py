"""Shapes of the analytics API (``/v1/convai/analytics/…``): funnel, time series, breakdowns."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "AnalyticsFilters",
    "BreakdownResponse",
    "BreakdownRow",
    "FunnelResponse",
    "FunnelStep",
    "TimeseriesMetric",
    "TimeseriesPoint",
    "TimeseriesResponse",
    "TimeseriesSeries",
]

TimeseriesMetric = Literal[
    "calls",
    "answered",
    "human",
    "conversations",
    "qualified",
    "meetings_booked",
    "answer_rate",
    "booking_rate",
    "call_minutes",
    "v2v_p50",
    "v2v_p95",
    "outcomes",
]


class AnalyticsFilters(BaseModel):
    agent_id: str | None
    campaign_id: str | None
    version_id: str | None
    from_: datetime = Field(alias="from", description="Inclusive, on the hour (UTC)")
    to: datetime = Field(description="Exclusive, on the hour (UTC)")

    model_config = {"populate_by_name": True}


class FunnelStep(BaseModel):
    step: Literal["dialled", "answered", "human", "conversations", "qualified", "meetings_booked"]
    count: int
    rate_of_previous: float | None = Field(description="count / the previous step's count")
    rate_of_dialled: float | None = Field(description="count / dialled")


class FunnelResponse(BaseModel):
    filters: AnalyticsFilters
    dialled: int = Field(description="Calls placed or received")
    answered: int = Field(description="Calls that connected")
    human: int = Field(description="Answered by a person (not a machine, fax, screener or menu)")
    conversations: int = Field(description="A person talked with the agent for 30 s or more")
    qualified: int = Field(description="Conversations in which every qualification field was collected")
    meetings_booked: int = Field(description="Calls whose outcome is meeting_booked")
    call_minutes: float
    answer_rate: float | None = Field(description="answered / dialled")
    human_rate: float | None = Field(description="human / answered")
    conversation_rate: float | None = Field(description="conversations / human")
    qualified_rate: float | None = Field(description="qualified / conversations")
    booking_rate: float | None = Field(description="meetings_booked / human (as in experiments)")
    steps: list[FunnelStep]


class TimeseriesPoint(BaseModel):
    t: datetime = Field(description="Start of the bucket (UTC)")
    value: int | float | None = Field(
        description="null: no calls (rates) or no turns (latency) in the bucket"
    )


class TimeseriesSeries(BaseModel):
    name: str = Field(description="The metric, or for metric=outcomes the outcome")
    points: list[TimeseriesPoint]


class TimeseriesResponse(BaseModel):
    filters: AnalyticsFilters
    metric: TimeseriesMetric
    bucket: Literal["hour", "day"]
    series: list[TimeseriesSeries]


class BreakdownRow(BaseModel):
    key: str = Field(description="The hour (0-23), campaign id, version id, stage, objection or outcome")
    label: str = Field(description="For people: 'v3' for a version, the campaign's name, '09:00' …")
    calls: int
    answered: int
    human: int
    conversations: int
    qualified: int
    meetings_booked: int
    call_minutes: float
    answer_rate: float | None
    booking_rate: float | None = Field(description="meetings_booked / human")


class BreakdownResponse(BaseModel):
    filters: AnalyticsFilters
    by: Literal["local_hour", "campaign", "version", "stage", "objection", "outcome"]
    rows: list[BreakdownRow]
