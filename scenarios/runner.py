"""Runs scenarios against an agent: each repeated K times, a bounded number at once; pass rates out."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from call.playbook import stage_outcome
from events.analysis import analyze_conversation
from models import Agent, AgentVersion
from providers.base import ChatMessage
from scenarios.evaluate import CallRecord, evaluate, passed
from scenarios.services import Services
from simulator.scenario import Mode, ScenarioSpec
from storage.agent_versions import agent_from_spec

log = logging.getLogger(__name__)

NOT_A_JUDGE = {"local", "echo"}  # the embedded model is too small to judge; echo only echoes
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"pass": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["pass", "reason"],
}


@dataclass(slots=True)
class Scenario:
    spec: ScenarioSpec
    id: str | None = None  # stored scenarios have one


def make_judge(llm: Any) -> Any:
    async def judge(rubric: str, transcript: list[dict[str, Any]]) -> tuple[bool, str]:
        lines = "\n".join(f"{t['role']}: {t['text']}" for t in transcript)
        messages = [
            ChatMessage(
                "system",
                "You grade a phone call between an AI sales agent and a caller against a rubric. "
                'Answer with JSON only: {"pass": true|false, "reason": "<one sentence>"}.',
            ),
            ChatMessage("user", f"Rubric: {rubric}\n\nTranscript:\n{lines}"),
        ]
        text = ""
        async with asyncio.timeout(60):
            async for chunk in llm.stream_chat(
                messages, temperature=0.0, max_tokens=200, json_schema=JUDGE_SCHEMA
            ):
                text += chunk.text
        start, end = text.find("{"), text.rfind("}")
        verdict = json.loads(text[start : end + 1])
        return bool(verdict.get("pass")), str(verdict.get("reason", ""))[:300]

    return judge


async def run_suite(
    runtime: Services,
    agent_id: str,
    scenarios: list[Scenario],
    *,
    mode: Mode = "text",
    repeat: int = 1,
    concurrency: int = 4,
    base_url: str | None = None,
    version_id: str | None = None,
) -> dict[str, Any]:
    """Every scenario ``repeat`` times (at most ``concurrency`` calls at once); the pass rate of each.

    ``version_id``: run a version of the agent (an experiment's variant before it takes traffic)
    instead of its latest; the version's LLM and data-collection fields are used."""
    from scenarios.audio_call import agent_number, run_audio_call
    from scenarios.text_call import run_text_call

    async with runtime.db.session() as session:
        agent = await session.get(Agent, agent_id)
        if agent is None:
            raise LookupError(f"agent not found: {agent_id}")
        if version_id is not None:
            version = await session.get(AgentVersion, version_id)
            if version is None or version.agent_id != agent_id:
                raise LookupError(f"agent version not found: {version_id}")
            agent = agent_from_spec(agent_id, version.spec, version.created_at)
        override = (agent.providers or {}).get("llm")
        data_fields = list(agent.data_collection or [])
        playbook = agent.playbook
    llm_name = await runtime.providers.llm_name(override)
    llm = await runtime.providers.llm(override)
    judge = make_judge(llm) if llm_name not in NOT_A_JUDGE else None
    if llm_name == "local":  # the embedded model answers one call at a time: more would only time out
        concurrency = min(concurrency, 2)
    gate = asyncio.Semaphore(max(1, concurrency))
    if mode == "audio" and base_url is None:
        raise ValueError("audio mode needs the service's URL")
    to_number = await agent_number(runtime, agent_id) if mode == "audio" else ""

    async def one(scenario: Scenario, attempt: int) -> dict[str, Any]:
        async with gate:
            if mode == "audio":
                assert base_url is not None
                record = await run_audio_call(
                    runtime, base_url, agent_id, to_number, scenario.spec, version_id
                )
            else:
                record = await run_text_call(runtime, agent_id, scenario.spec, version_id)
            criteria = scenario.spec.criteria
            if (criteria.outcome or criteria.collected_data) and not record.error:
                await _analyze(record, data_fields, llm, playbook)
            results = await evaluate(criteria, record, judge)
        return {
            "scenario_id": scenario.id,
            "scenario": scenario.spec.name,
            "attempt": attempt,
            "passed": passed(results),
            "criteria": [r.as_dict() for r in results],
            # the conversation was removed after the run: the run keeps its transcript, not a dangling id
            **{k: v for k, v in record.as_dict().items() if k != "conversation_id"},
        }

    jobs = [one(s, k + 1) for s in scenarios for k in range(repeat)]
    runs = await asyncio.gather(*jobs)
    summary = []
    for scenario in scenarios:
        mine = [r for r in runs if r["scenario"] == scenario.spec.name and r["scenario_id"] == scenario.id]
        ok = sum(r["passed"] for r in mine)
        failures = sorted({c["message"] for r in mine for c in r["criteria"] if c["status"] == "failed"})
        summary.append(
            {
                "scenario_id": scenario.id,
                "scenario": scenario.spec.name,
                "runs": len(mine),
                "passed": ok,
                "pass_rate": round(ok / len(mine), 3) if mine else 0.0,
                "expect_on_embedded": scenario.spec.expect_on_embedded,
                "not_judged": any(c["status"] == "not_judged" for r in mine for c in r["criteria"]),
                "failures": failures[:10],
            }
        )
    total = len(runs)
    return {
        "mode": mode,
        "repeat": repeat,
        "llm": llm_name,
        "judge": llm_name if judge is not None else None,
        "passed": all(r["passed"] for r in runs),
        "pass_rate": round(sum(r["passed"] for r in runs) / total, 3) if total else 0.0,
        "summary": summary,
        "runs": runs,
    }


async def _analyze(record: CallRecord, data_fields: list[Any], llm: Any, playbook: Any = None) -> None:
    """Outcome and collected data, as post-call analysis finds them for a real call (the playbook's
    stages and the fields it heard included)."""
    try:
        analysis = await analyze_conversation(
            [(t["role"], t["text"]) for t in record.transcript],
            data_fields,
            llm,
            tool_calls=record.tool_calls,
            end_reason=record.end_reason,
            stage_outcome=stage_outcome(playbook, record.stage_path),
        )
        heard = {k: v for k, v in record.collected_data.items() if v is not None}
        record.outcome, record.collected_data = analysis.outcome, {**analysis.collected, **heard}
    except Exception as exc:
        record.notes.append(f"post-call analysis failed ({type(exc).__name__})")
