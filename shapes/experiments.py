"""Shapes of the experiments API (``/v1/convai/experiments``): A/B tests between versions of an agent."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from shapes.common import E164, Id, Page, Strict

__all__ = [
    "ExperimentCreate",
    "ExperimentListResponse",
    "ExperimentResponse",
    "ExperimentUpdate",
    "Interval",
    "VariantIn",
    "VariantResult",
]


class VariantIn(Strict):
    version_id: Id = Field(description="A version of the experiment's agent")
    weight: int = Field(ge=1, le=1000, description="Share of the traffic, relative to the other weights")
    label: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,40}$", description="Defaults to A, B, C … in order"
    )


class ExperimentCreate(Strict):
    agent_id: Id
    name: str = Field(default="", max_length=200)
    variants: list[VariantIn] = Field(
        min_length=2, max_length=10, description="The first variant is the control (A)"
    )
    campaign_id: Id | None = Field(default=None, description="Run on this campaign's calls …")
    phone_number: E164 | None = Field(default=None, description="… or on inbound calls to this number")

    @model_validator(mode="after")
    def _one_target(self) -> ExperimentCreate:
        if (self.campaign_id is None) == (self.phone_number is None):
            raise ValueError("give exactly one of campaign_id and phone_number")
        labels = [v.label or chr(ord("A") + i) for i, v in enumerate(self.variants)]
        if len(set(labels)) != len(labels):
            raise ValueError("variant labels must be unique")
        if len({v.version_id for v in self.variants}) != len(self.variants):
            raise ValueError("each variant needs a version of its own")
        return self


class ExperimentUpdate(Strict):
    status: Literal["running", "stopped"]


class Interval(BaseModel):
    low: float
    high: float


class VariantResult(BaseModel):
    label: str
    version_id: str
    weight: int
    calls: int = Field(description="Calls assigned this variant (ended and counted)")
    answered: int
    human: int = Field(description="Calls a person answered: the booking rate's denominator")
    conversations: int
    qualified: int
    meetings_booked: int
    booking_rate: float | None = Field(description="meetings_booked / human")
    booking_rate_ci95: Interval | None = Field(description="Wilson score interval, 95 %")


class ExperimentResponse(BaseModel):
    id: str
    name: str
    agent_id: str
    campaign_id: str | None
    phone_number: str | None
    status: Literal["running", "stopped"]
    created_at: datetime
    stopped_at: datetime | None
    variants: list[VariantResult]
    difference: float | None = Field(
        description="Booking rate of the best challenger minus the control's (A)"
    )
    difference_ci95: Interval | None = Field(description="Newcombe's hybrid score interval, 95 %")
    compared: list[str] = Field(
        description="The two variant labels the difference is about: [control, challenger]"
    )
    verdict: Literal["not_enough_data", "control_better", "challenger_better", "no_difference"]
    verdict_text: str = Field(description="The verdict in plain words")


class ExperimentListResponse(Page):
    experiments: list[ExperimentResponse]
