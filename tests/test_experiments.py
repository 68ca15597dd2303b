"""Experiments: the intervals against published values, the verdicts, sticky and weight-respecting
assignment of real inbound calls, per-variant results from calls as they end, and the API's refusals."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from api.experiment_service import verdict
from core.stats import newcombe, wilson
from models import Conversation, ExperimentAssignment
from schemas import VariantResult
from storage.agent_versions import lead_key, pick_variant
from storage.analytics import count_ended_call
from tests.api_helpers import db_of
from tests.conftest import SQLITE_ONLY

AGENTS = "/v1/convai/agents"
EXPERIMENTS = "/v1/convai/experiments"
NUMBER = "+15550100001"


def test_wilson_and_newcombe_match_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857-872: 81/263 → 0.2553-0.3662 (Wilson, table I);
    # 56/70 vs 48/80 → difference 0.2000, 0.0524 to 0.3339 (method 10, table II)
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson(0, 10)  # 0/10: Wilson gives 0 to 0.2775 (where the normal interval gives 0-0)
    assert (round(low, 4), round(high, 4)) == (0.0, 0.2775)
    diff, low, high = newcombe(48, 80, 56, 70)
    assert (round(diff, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)
    assert wilson(0, 0) == (0.0, 1.0)


def arm(label: str, human: int, booked: int) -> VariantResult:
    return VariantResult(
        label=label, version_id=f"agver_{label}", weight=1, calls=human, answered=human, human=human,
        conversations=human, qualified=0, meetings_booked=booked,
        booking_rate=booked / human if human else None, booking_rate_ci95=None,
    )  # fmt: skip


def test_verdicts_in_plain_words() -> None:
    word, text, _, _ = verdict(arm("A", 20, 2), arm("B", 200, 40))
    assert word == "not_enough_data" and text.startswith(
        "Not enough data yet: A has 20 calls answered by a person"
    )
    word, text, diff, ci = verdict(arm("A", 400, 40), arm("B", 400, 80))  # 10 % vs 20 %
    assert word == "challenger_better" and text.startswith(
        "B is better: B books 20.0 % of calls a person answered, A 10.0 %"
    )
    assert diff == 0.1 and ci is not None and 0 < ci.low < 0.1 < ci.high
    word, text, _, _ = verdict(arm("A", 400, 80), arm("B", 400, 40))
    assert word == "control_better" and text.startswith("A is better")
    word, text, _, ci = verdict(arm("A", 4000, 400), arm("B", 4000, 410))  # 10.0 % vs 10.25 %, tight
    assert (
        word == "no_difference"
        and text.startswith("No difference")
        and ci is not None
        and ci.low < 0 < ci.high
    )
    word, text, _, _ = verdict(arm("A", 60, 6), arm("B", 60, 9))  # 10 % vs 15 %: could go either way
    assert word == "not_enough_data" and "could still go either way" in text


def test_assignment_is_sticky_and_follows_the_weights() -> None:
    variants = [
        {"label": "A", "version_id": "a", "weight": 3},
        {"label": "B", "version_id": "b", "weight": 1},
    ]
    leads = [f"+1202555{n:04d}" for n in range(10_000)]
    picks = Counter(pick_variant(variants, lead_key("exp_1", lead))["label"] for lead in leads)
    assert 7300 <= picks["A"] <= 7700, picks  # 75 % ± 4.6 sd
    assert all(
        pick_variant(variants, lead_key("exp_1", lead)) is pick_variant(variants, lead_key("exp_1", lead))
        for lead in leads[:100]
    )
    # another experiment shuffles the leads afresh
    again = Counter(
        (
            pick_variant(variants, lead_key("exp_1", lead))["label"],
            pick_variant(variants, lead_key("exp_2", lead))["label"],
        )
        for lead in leads
    )
    assert 5300 <= again[("A", "A")] <= 5950, again  # 0.75 * 0.75 = 56 %: independent


async def _agent_with_two_versions(client: httpx.AsyncClient) -> tuple[str, str, str]:
    created = await client.post(AGENTS, json={"name": "Ava", "first_message": "Version A here."})
    agent_id = created.json()["agent_id"]
    await client.patch(f"{AGENTS}/{agent_id}", json={"first_message": "Version B here."})
    listed = (await client.get(f"{AGENTS}/{agent_id}/versions")).json()["versions"]
    return agent_id, listed[1]["id"], listed[0]["id"]


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_inbound_calls_get_sticky_variants_and_results_come_per_variant(
    app_client: httpx.AsyncClient,
) -> None:
    agent_id, va, vb = await _agent_with_two_versions(app_client)
    assert (
        await app_client.post("/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": agent_id})
    ).status_code == 201
    body = {"agent_id": agent_id, "name": "greeting test", "phone_number": NUMBER,
            "variants": [{"version_id": va, "weight": 1}, {"version_id": vb, "weight": 1}]}  # fmt: skip
    created = await app_client.post(EXPERIMENTS, json=body)
    assert created.status_code == 201, created.text
    experiment = created.json()
    assert [(v["label"], v["calls"]) for v in experiment["variants"]] == [("A", 0), ("B", 0)]
    assert experiment["verdict"] == "not_enough_data"

    callers = [f"+1202555{n:04d}" for n in range(80)]
    for round_ in range(2):  # every caller calls twice
        for i, caller in enumerate(callers):
            form = {"CallSid": f"CA{round_}{i:031d}", "From": caller, "To": NUMBER}
            r = await app_client.post("/twiml/voice", data=form)
            assert r.status_code == 200 and "<Stream" in r.text, r.text
    db = db_of(app_client)
    async with db.session() as session:
        rows = (
            await session.execute(
                select(Conversation.id, Conversation.from_number, Conversation.agent_version_id)
            )
        ).all()
        assigned = {a.conversation_id: a for a in (await session.scalars(select(ExperimentAssignment))).all()}
    assert len(rows) == 160 and len(assigned) == 160
    per_caller: dict[str, set[str]] = {}
    for conv_id, caller, version in rows:
        per_caller.setdefault(caller, set()).add(version)
        assert assigned[conv_id].version_id == version
        assert assigned[conv_id].variant == ("A" if version == va else "B")
        assert assigned[conv_id].lead_key == lead_key(experiment["id"], caller)  # a hash, not the number
    assert all(len(v) == 1 for v in per_caller.values())  # sticky: each caller always got one version
    split = Counter(next(iter(v)) for v in per_caller.values())
    assert 25 <= split[va] <= 55, split  # 1:1 weights, 80 callers

    # the calls end: B's callers all book, A's none; results count them per variant
    async with db.session() as session:
        for conversation in (await session.scalars(select(Conversation))).all():
            conversation.status, conversation.call_state = "completed", "ENDED"
            conversation.started_at = conversation.created_at or datetime.now(UTC)
            conversation.duration_sec = 60.0
            conversation.outcome = (
                "meeting_booked" if conversation.agent_version_id == vb else "not_interested"
            )
        ids = [c.id for c in (await session.scalars(select(Conversation))).all()]
    for conv_id in ids:
        await count_ended_call(db, conv_id)
    result = (await app_client.get(f"{EXPERIMENTS}/{experiment['id']}")).json()
    by_label = {v["label"]: v for v in result["variants"]}
    assert by_label["A"]["calls"] == 2 * split[va] and by_label["B"]["calls"] == 2 * split[vb]
    assert by_label["A"]["meetings_booked"] == 0 and by_label["B"]["booking_rate"] == 1.0
    low, high = wilson(2 * split[vb], 2 * split[vb])
    assert by_label["B"]["booking_rate_ci95"] == {"low": round(low, 4), "high": round(high, 4)}
    assert result["verdict"] == "challenger_better" and result["verdict_text"].startswith("B is better")
    assert result["compared"] == ["A", "B"] and result["difference"] == 1.0
    listed = (await app_client.get(EXPERIMENTS, params={"agent_id": agent_id})).json()["experiments"]
    assert [e["id"] for e in listed] == [experiment["id"]]

    # stopped: new calls run the agent's latest version, with no assignment
    stopped = await app_client.patch(f"{EXPERIMENTS}/{experiment['id']}", json={"status": "stopped"})
    assert (
        stopped.status_code == 200 and stopped.json()["status"] == "stopped" and stopped.json()["stopped_at"]
    )
    r = await app_client.post(
        "/twiml/voice", data={"CallSid": "CA" + "9" * 32, "From": callers[0], "To": NUMBER}
    )
    assert r.status_code == 200
    async with db.session() as session:
        last = await session.scalar(select(Conversation).where(Conversation.call_sid == "CA" + "9" * 32))
        assert last is not None and last.agent_version_id == vb
        assert await session.get(ExperimentAssignment, last.id) is None


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_experiment_requests_are_checked(app_client: httpx.AsyncClient) -> None:
    agent_id, va, vb = await _agent_with_two_versions(app_client)
    other_id, other_a, _ = await _agent_with_two_versions(app_client)
    await app_client.post("/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": agent_id})
    await app_client.post(
        "/v1/convai/phone-numbers", json={"phone_number": "+15550100002", "agent_id": other_id}
    )
    good = {
        "agent_id": agent_id,
        "phone_number": NUMBER,
        "variants": [{"version_id": va, "weight": 50}, {"version_id": vb, "weight": 50}],
    }
    bad = [
        ({**good, "variants": [{"version_id": va, "weight": 1}]}, 422),  # one variant
        ({**good, "variants": [{"version_id": va, "weight": 1}, {"version_id": va, "weight": 1}]}, 422),
        ({**good, "variants": [{"version_id": va, "weight": 0}, {"version_id": vb, "weight": 1}]}, 422),
        ({**good, "variants": [{"version_id": va, "weight": 1}, {"version_id": other_a, "weight": 1}]}, 422),
        ({**good, "campaign_id": "btcal_x"}, 422),  # both targets
        ({k: v for k, v in good.items() if k != "phone_number"}, 422),  # neither
        ({**good, "phone_number": "+15550100002"}, 422),  # the number's calls go to another agent
        ({**good, "phone_number": "+15550100009"}, 404),
        ({**good, "agent_id": "agent_nope"}, 404),
        ({k: v for k, v in good.items() if k != "phone_number"} | {"campaign_id": "btcal_nope"}, 404),
        ({**good, "colour": "red"}, 422),
    ]
    for body, code in bad:
        r = await app_client.post(EXPERIMENTS, json=body)
        assert r.status_code == code, (body, r.text)
        assert "detail" in r.json() and "Traceback" not in r.text
    first = await app_client.post(EXPERIMENTS, json=good)
    assert first.status_code == 201, first.text
    clash = await app_client.post(EXPERIMENTS, json=good)
    assert clash.status_code == 409 and "already running" in clash.json()["detail"]
    assert (await app_client.get(f"{EXPERIMENTS}/exp_nope")).status_code == 404
    assert (
        await app_client.patch(f"{EXPERIMENTS}/{first.json()['id']}", json={"status": "paused"})
    ).status_code == 422


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_a_campaign_experiment_stamps_each_lead_with_its_variant(app_client: httpx.AsyncClient) -> None:
    """The outbound path (``telephony.outbound.place_call``) stamps its conversation with ``stamp_call``
    and the campaign: the same lead always gets the same version."""
    from models import Agent, Campaign
    from storage.agent_versions import stamp_call

    agent_id, va, vb = await _agent_with_two_versions(app_client)
    db = db_of(app_client)
    async with db.session() as session:
        campaign = Campaign(name="Q4", agent_id=agent_id)
        session.add(campaign)
    body = {"agent_id": agent_id, "campaign_id": campaign.id,
            "variants": [{"version_id": va, "weight": 1, "label": "control"}, {"version_id": vb, "weight": 3, "label": "new"}]}  # fmt: skip
    created = await app_client.post(EXPERIMENTS, json=body)
    assert created.status_code == 201, created.text
    seen: dict[str, set[str]] = {}
    for _attempt in range(2):
        async with db.session() as session:
            agent = await session.get(Agent, agent_id)
            assert agent is not None
            for n in range(40):
                lead = f"+1202555{n:04d}"
                conversation = Conversation(
                    agent_id=agent_id, direction="outbound", to_number=lead, campaign_id=campaign.id
                )
                session.add(conversation)
                await session.flush()
                choice = await stamp_call(
                    session, conversation, agent, lead_number=lead, campaign_id=campaign.id
                )
                assert choice.experiment_id == created.json()["id"]
                seen.setdefault(lead, set()).add(conversation.agent_version_id)
    assert all(len(v) == 1 for v in seen.values())
    shares = Counter(next(iter(v)) for v in seen.values())
    assert shares[vb] > shares[va], shares  # 3:1
    # another campaign of the agent, with no experiment: the latest version
    async with db.session() as session:
        agent = await session.get(Agent, agent_id)
        conversation = Conversation(
            agent_id=agent_id, direction="outbound", to_number="+12025550000", campaign_id="btcal_other"
        )
        session.add(conversation)
        await session.flush()
        choice = await stamp_call(
            session, conversation, agent, lead_number="+12025550000", campaign_id="btcal_other"
        )
    assert (choice.version_id, choice.experiment_id) == (vb, None)
