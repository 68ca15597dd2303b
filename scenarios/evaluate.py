"""Checks a finished call against a scenario's criteria; every failure says what was expected and got."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from simulator.scenario import Check, Criteria, Phrase, ToolExpectation, ValueCheck

Status = Literal["passed", "failed", "not_judged"]
Judge = Callable[[str, list[dict[str, Any]]], Awaitable[tuple[bool, str]]]


@dataclass(slots=True)
class CallRecord:
    """What happened on one scenario call, whichever mode ran it."""

    mode: str
    transcript: list[dict[str, Any]] = field(default_factory=list)  # {"role", "text", ...}
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"name", "arguments", "success", ...}
    ended_by: str | None = None  # agent | caller
    end_reason: str | None = None
    on_dnc_list: bool = False
    v2v_ms: list[float] = field(default_factory=list)
    outcome: str | None = None
    collected_data: dict[str, Any] = field(default_factory=dict)
    stage_path: list[str] = field(default_factory=list)  # the playbook's stages, in order
    ended_stage: str | None = None
    conversation_id: str = ""
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    # what the call would have sent outside the service (core.sandbox): events, texts, transfers, tools
    would_have_sent: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class CriterionResult:
    criterion: str
    status: Status
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s:$%.']", " ", text.lower()).replace("’", "'").split())


def agent_text(record: CallRecord) -> str:
    """What the agent said in reply to the caller (the fixed greeting is not a reply: phrases are checked
    on the rest)."""
    return " ".join(
        t["text"]
        for t in record.transcript
        if t["role"] == "agent" and t.get("text") and t.get("kind") != "greeting"
    )


def said(record: CallRecord, limit: int = 240) -> str:
    text = agent_text(record)
    return f'agent said: "{text[:limit]}{"…" if len(text) > limit else ""}"' if text else "agent said nothing"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def value_ok(check: Check, value: Any) -> bool:
    if not isinstance(check, ValueCheck):
        if isinstance(check, str):
            return value is not None and str(value).strip().lower() == check.strip().lower()
        return value == check
    if check.present is not None and (value is not None) != check.present:
        return False
    if check.equals is not None and value != check.equals:
        if not (isinstance(check.equals, str) and str(value).strip().lower() == check.equals.strip().lower()):
            return False
    text = "" if value is None else (value if isinstance(value, str) else json.dumps(value, default=str))
    if check.contains is not None and (value is None or check.contains.lower() not in text.lower()):
        return False
    if check.matches is not None:
        try:
            if value is None or re.search(check.matches, text, re.I) is None:
                return False
        except re.error:
            return False
    return True


def describe(check: Check) -> str:
    return check.describe() if isinstance(check, ValueCheck) else f"= {check!r}"


def _tool_matches(expected: ToolExpectation, call: dict[str, Any]) -> list[str]:
    """Why ``call`` does not meet ``expected`` (empty: it does)."""
    problems = []
    args = call.get("arguments") or {}
    for key, check in expected.arguments.items():
        if not value_ok(check, args.get(key)):
            problems.append(f"{key} {args.get(key)!r} (expected {describe(check)})")
    if expected.success is not None and bool(call.get("success")) != expected.success:
        problems.append(f"success={call.get('success')} ({call.get('error') or 'no error'})")
    return problems


def _expected_tool(expected: ToolExpectation) -> str:
    args = ", ".join(f"{k} {describe(c)}" for k, c in expected.arguments.items())
    return f"tool {expected.name}" + (f" with {args}" if args else "")


def _phrase_found(phrase: Phrase, text: str) -> bool:
    options = [phrase] if isinstance(phrase, str) else phrase
    return any(normalize(option) in text for option in options)


def _phrase_label(phrase: Phrase) -> str:
    return repr(phrase) if isinstance(phrase, str) else " or ".join(repr(p) for p in phrase)


async def evaluate(
    criteria: Criteria, record: CallRecord, judge: Judge | None = None
) -> list[CriterionResult]:
    results: list[CriterionResult] = []

    def add(name: str, ok: bool, message: str) -> None:
        results.append(CriterionResult(name, "passed" if ok else "failed", message))

    if record.error:
        add("call", False, f"expected the call to run, got an error: {record.error}")
    calls = record.tool_calls
    for expected in criteria.tools_called:
        same_name = [c for c in calls if c.get("name") == expected.name]
        if any(not _tool_matches(expected, c) for c in same_name):
            add(f"tool {expected.name}", True, f"{_expected_tool(expected)} was called")
            continue
        if same_name:
            got = "; ".join(", ".join(_tool_matches(expected, c)) for c in same_name)
            message = f"expected {_expected_tool(expected)}, got {expected.name} with {got}"
        else:
            others = ", ".join(c.get("name", "?") for c in calls) or "none"
            message = f"expected {_expected_tool(expected)}, got {others}; {said(record)}"
        add(f"tool {expected.name}", False, message)
    for name in criteria.tools_not_called:
        hits = [c for c in calls if c.get("name") == name]
        add(
            f"no tool {name}",
            not hits,
            f"expected no {name} call, got {len(hits)}: {json.dumps(hits[0].get('arguments'))}"
            if hits
            else f"{name} was not called",
        )
    text = normalize(agent_text(record))
    for phrase in criteria.agent_says:
        found = _phrase_found(phrase, text)
        add(
            "agent says",
            found,
            f"agent said {_phrase_label(phrase)}"
            if found
            else f"expected the agent to say {_phrase_label(phrase)}; " + said(record),
        )
    for phrase in criteria.states_facts:
        found = _phrase_found(phrase, text)
        add(
            "states fact",
            found,
            f"agent stated {_phrase_label(phrase)}"
            if found
            else f"expected the agent to state {_phrase_label(phrase)}; {said(record)}",
        )
    for phrase in criteria.agent_never_says:
        found = normalize(phrase) in text
        add(
            "agent never says",
            not found,
            f"expected the agent never to say {phrase!r}; {said(record)}"
            if found
            else f"{phrase!r} not said",
        )
    if criteria.ended_by is not None:
        ok = record.ended_by == criteria.ended_by
        add(
            "ended by",
            ok,
            f"ended by {record.ended_by}"
            if ok
            else f"expected the {criteria.ended_by} to end the call, got {record.ended_by or 'nobody'}"
            f" (end reason {record.end_reason or 'none'}); {said(record)}",
        )
    if criteria.end_reason is not None:
        ok = record.end_reason == criteria.end_reason
        add(
            "end reason",
            ok,
            f"end reason {record.end_reason}"
            if ok
            else f"expected end reason {criteria.end_reason}, got {record.end_reason or 'none'}; "
            + said(record),
        )
    if criteria.on_dnc_list is not None:
        ok = record.on_dnc_list == criteria.on_dnc_list
        want = "on" if criteria.on_dnc_list else "not on"
        got = "it is" if record.on_dnc_list else "it is not"
        add(
            "do-not-call list",
            ok,
            f"the number is {want} the do-not-call list"
            if ok
            else f"expected the caller's number {want} the do-not-call list, {got}; {said(record)}",
        )
    if criteria.outcome is not None:
        ok = record.outcome == criteria.outcome
        add(
            "outcome",
            ok,
            f"outcome {record.outcome}"
            if ok
            else f"expected outcome {criteria.outcome}, got {record.outcome}",
        )
    for key, check in criteria.collected_data.items():
        value = record.collected_data.get(key)
        ok = value_ok(check, value)
        add(
            f"collected {key}",
            ok,
            f"{key} = {value!r}" if ok else f"expected collected {key} {describe(check)}, got {value!r}",
        )
    if criteria.stage_path:
        ok = in_order(criteria.stage_path, record.stage_path)
        add(
            "stage path",
            ok,
            f"went through {' → '.join(criteria.stage_path)}"
            if ok
            else f"expected the stages {' → '.join(criteria.stage_path)} in order, got "
            f"{' → '.join(record.stage_path) or 'no playbook stages'}; {said(record)}",
        )
    if criteria.ended_stage is not None:
        ok = record.ended_stage == criteria.ended_stage
        add(
            "ended stage",
            ok,
            f"ended in {record.ended_stage}"
            if ok
            else f"expected the call to end in stage {criteria.ended_stage}, got {record.ended_stage}",
        )
    if criteria.max_v2v_p95_ms is not None:
        label = "voice-to-voice" if record.mode == "audio" else "reply latency (text mode: no STT/TTS)"
        if not record.v2v_ms:
            add("latency", False, f"expected {label} p95 ≤ {criteria.max_v2v_p95_ms:.0f} ms, got no replies")
        else:
            got = p95(record.v2v_ms)
            add(
                "latency",
                got <= criteria.max_v2v_p95_ms,
                f"{label} p95 {got:.0f} ms (limit {criteria.max_v2v_p95_ms:.0f} ms, "
                f"{len(record.v2v_ms)} replies)",
            )
    if criteria.rubric is not None:
        if judge is None:
            results.append(
                CriterionResult(
                    "rubric",
                    "not_judged",
                    "not judged: needs an LLM other than the embedded one (set LLM_PROVIDER=ollama)",
                )
            )
        else:
            try:
                ok, why = await judge(criteria.rubric, record.transcript)
                add(
                    "rubric",
                    ok,
                    f"judge: {why}" if ok else f"expected: {criteria.rubric[:200]}; judge: {why}",
                )
            except Exception as exc:
                results.append(
                    CriterionResult(
                        "rubric", "not_judged", f"not judged: the judge failed ({type(exc).__name__})"
                    )
                )
    return results


def in_order(expected: list[str], path: list[str]) -> bool:
    """``expected`` is a subsequence of ``path`` (each stage after the one before it)."""
    walk = iter(path)
    return all(any(stage == seen for seen in walk) for stage in expected)


def passed(results: list[CriterionResult]) -> bool:
    """A run passes when nothing failed and something was actually checked (not judged is no pass)."""
    return not any(r.status == "failed" for r in results) and any(r.status == "passed" for r in results)


def safe_error(exc: BaseException) -> str:
    """What went wrong, without internals (SQL, paths) in stored results; details go to the log."""
    if isinstance(exc, LookupError | ValueError):
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return f"{type(exc).__name__} (see the server log)"
