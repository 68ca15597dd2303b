"""Calling hours in a lead's own time zone(s): is a moment inside them, and when do they next open."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def hm(value: str) -> time:
    hour, minute = value.split(":")
    return time(int(hour), int(minute))


def _zone_next(
    moment: datetime, tz: ZoneInfo, start: time, end: time, days: Sequence[int]
) -> datetime | None:
    """The first instant >= moment inside the window in one zone (None: no allowed day)."""
    local = moment.astimezone(tz)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if days and day.weekday() not in days:
            continue
        opens = datetime.combine(day, start, tzinfo=tz)
        closes = datetime.combine(day, end, tzinfo=tz)
        if moment >= closes:
            continue
        return max(moment, opens)
    return None


def next_opening(
    moment: datetime, zones: Sequence[str], start: str, end: str, days: Sequence[int] = ()
) -> datetime | None:
    """``moment`` itself when every zone is inside its calling hours, else the next instant that is.

    A number can span zones (``+1 800…``): it is called only when the hours hold in all of them.
    None when no such instant exists in the next week (e.g. zones too far apart for a short window).
    """
    start_t, end_t = hm(start), hm(end)
    candidate = moment
    for _ in range(16):
        openings = [_zone_next(candidate, zone(name), start_t, end_t, days) for name in zones or ["UTC"]]
        if any(o is None for o in openings):
            return None
        latest = max(o for o in openings if o is not None)
        if latest == candidate:
            return candidate
        if latest - moment > timedelta(days=8):
            return None
        candidate = latest
    return None


def is_open(moment: datetime, zones: Sequence[str], start: str, end: str, days: Sequence[int] = ()) -> bool:
    return next_opening(moment, zones, start, end, days) == moment
