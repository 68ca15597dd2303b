"""Which keys to press in a phone menu (an agent with ``dtmf_navigation``): the key that reaches a person.

A model that calls tools is asked, with ``send_dtmf`` as its only tool; the embedded default (a small
model, no reliable tool calls) and any model that does not answer with valid keys get a plain rule: the
option naming the contact, else sales, else an operator / representative / a person, else ``0``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from providers.base import ChatMessage, ProviderError
from tools.runner import SEND_DTMF_SPEC

DIGITS = re.compile(r"^[0-9*#w]{1,32}$")
_KEY = r"(\d|zero|one|two|three|four|five|six|seven|eight|nine|star|pound|hash)"
_WORD_KEYS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "star": "*", "pound": "#", "hash": "#",
}  # fmt: skip
# "for sales, press 1" / "to reach an operator, dial 0" and "press 1 for sales"
_LABEL_THEN_KEY = re.compile(rf"\b(?:for|to)\s+([^.;?!]*?),?\s+(?:please\s+)?(?:press|dial)\s+{_KEY}\b", re.I)
_KEY_THEN_LABEL = re.compile(rf"\b(?:press|dial)\s+{_KEY}\s+(?:for|to)\s+([^.,;?!]*)", re.I)
# what a person answers behind, best first (the named contact comes before all of them)
PREFERRED = (
    ("sales", "new customer", "buy", "purchase"),
    ("operator", "representative", "receptionist", "agent", "person", "someone", "associate", "front desk"),
)
FALLBACK_KEY = "0"  # most menus put the operator on 0
INSTRUCTION = (
    "You are calling {company_part}and a phone menu answered. Choose the option that reaches a person: "
    "{contact_part}sales, or an operator or representative. Call the send_dtmf tool with the keys to press. "
    "Do not say anything."
)


def menu_options(menu: str) -> list[tuple[str, str]]:
    """(what the option is, its key) in the order the menu says them."""
    found: list[tuple[int, str, str]] = []
    for m in _LABEL_THEN_KEY.finditer(menu):
        found.append((m.start(), m.group(1).strip().lower(), m.group(2).lower()))
    for m in _KEY_THEN_LABEL.finditer(menu):
        found.append((m.start(), m.group(2).strip().lower(), m.group(1).lower()))
    return [(label, _WORD_KEYS.get(key, key)) for _, label, key in sorted(found)]


def menu_digit(menu: str, contact: str = "") -> str:
    """The key for the named contact, sales, or a person; else ``0``."""
    options = menu_options(menu)
    names = [part.lower() for part in contact.split() if len(part) > 1]
    for label, key in options:
        if names and any(re.search(rf"\b{re.escape(n)}\b", label) for n in names):
            return key
    for words in PREFERRED:
        for label, key in options:
            if any(re.search(rf"\b{w}", label) for w in words):
                return key
    return FALLBACK_KEY


def _contact(variables: dict[str, Any]) -> str:
    for key in ("customer_name", "name", "first_name", "contact_name"):
        if str(variables.get(key) or "").strip():
            return str(variables[key]).strip()
    return ""


def uses_tools(llm: Any) -> bool:
    """A model that calls tools, other than the small embedded one (which answers from rules here)."""
    return bool(getattr(llm, "supports_tools", llm.name != "local")) and not getattr(
        llm, "extractive_knowledge", False
    )


async def choose_digits(llm: Any, profile: Any, menu: str, *, timeout_s: float) -> tuple[str, str]:
    """The keys to press for ``menu`` and how they were chosen (``llm`` or ``rule``)."""
    contact = _contact(profile.variables)
    if uses_tools(llm):
        company = str(profile.variables.get("company") or profile.variables.get("company_name") or "")
        system = INSTRUCTION.format(
            company_part=f"{contact} at {company} " if contact and company else "",
            contact_part=f"{contact} by name, " if contact else "",
        )
        messages = [ChatMessage("system", system), ChatMessage("user", menu)]
        try:
            async with asyncio.timeout(timeout_s):
                async for chunk in llm.stream_chat(
                    messages,
                    tools=[SEND_DTMF_SPEC],
                    model=profile.agent.llm_model,
                    temperature=0.0,
                    max_tokens=64,
                ):
                    for call in chunk.tool_calls or []:
                        digits = str((call.arguments or {}).get("digits", ""))
                        if call.name == "send_dtmf" and DIGITS.match(digits):
                            return digits, "llm"
        except (ProviderError, TimeoutError):
            pass  # the rule below still finds a key
    return menu_digit(menu, contact), "rule"
