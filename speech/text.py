"""Text that goes to a voice: prompt templating and cleaning written text into something a TTS reads well."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_\.]*)\s*\}\}")


class MissingVariableError(ValueError):
    def __init__(self, names: list[str]) -> None:
        super().__init__(f"missing dynamic variables: {', '.join(names)}")
        self.names = names


def template_variables(text: str) -> set[str]:
    return {m.group(1) for m in _VARIABLE.finditer(text or "")}


def fill_template(text: str, variables: Mapping[str, Any], *, strict: bool = False) -> str:
    """Replace ``{{name}}``; strict raises on a missing variable, lenient drops it (never speaks braces)."""
    missing = sorted(name for name in template_variables(text) if variables.get(name) in (None, ""))
    if strict and missing:
        raise MissingVariableError(missing)

    def value(match: re.Match[str]) -> str:
        found = variables.get(match.group(1))
        return "" if found is None else str(found)

    filled = _VARIABLE.sub(value, text or "")
    if not missing:
        return filled
    # "Hi {{name}}, …" without a name reads "Hi, …", not "Hi , …".
    return re.sub(r"[ \t]+([,.!?;:])", r"\1", re.sub(r"[ \t]{2,}", " ", filled))


_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f900-\U0001f9ff\u200d\ufe0f\u2b50\u2b55\u2705\u274c]+"
)
_URL = re.compile(r"https?://\S+|www\.\S+")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
_MD_MARKS = re.compile(r"(\*\*|__|\*|_|`+|~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.MULTILINE)
_CURRENCY = re.compile(r"\$(\d{1,3}(?:,\d{3})*|\d+)(?:\.(\d{2}))?(k|K|m|M)?\b")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\s*([aApP])\.?\s*[mM]\.?")
_TIME_24 = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")


def _say_currency(match: re.Match[str]) -> str:
    whole = match.group(1).replace(",", "")
    cents = match.group(2)
    scale = {"k": " thousand", "m": " million"}.get((match.group(3) or "").lower(), "")
    dollars = "dollar" if whole == "1" and not scale else "dollars"
    spoken = f"{whole}{scale} {dollars}"
    if cents and cents != "00":
        spoken += f" and {int(cents)} cents"
    return spoken


def _say_time(match: re.Match[str]) -> str:
    hour, minute, half = int(match.group(1)), match.group(2), match.group(3).lower()
    suffix = "a.m." if half == "a" else "p.m."
    return f"{hour} {suffix}" if minute == "00" else f"{hour} {minute} {suffix}"


def _say_time_24(match: re.Match[str]) -> str:
    hour, minute = int(match.group(1)), match.group(2)
    return f"{hour} o'clock" if minute == "00" else f"{hour} {minute}"


def strip_markdown(text: str) -> str:
    """The words of a markdown line: no link targets, heading or bullet marks, emphasis."""
    text = _MD_LINK.sub(r"\1", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    return _MD_MARKS.sub("", text).strip()


def clean_markdown_for_tts(text: str) -> str:
    """Strip markdown, links, urls and emoji; read currency, times and percentages naturally."""
    text = _URL.sub("", _MD_LINK.sub(r"\1", text))
    text = strip_markdown(text)
    text = _EMOJI.sub("", text)
    text = _CURRENCY.sub(_say_currency, text)
    text = _TIME.sub(_say_time, text)
    text = _TIME_24.sub(_say_time_24, text)
    text = _PERCENT.sub(r"\1 percent", text)
    text = text.replace("&", " and ").replace("@", " at ")
    text = re.sub(r"\s+", " ", text)
    return text.strip()
