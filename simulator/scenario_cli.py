"""``python -m simulator test <file.json|agent_id>``: run scenario tests on a server, for people and CI.

A file holds scenarios (``simulator.scenario.ScenarioFile``) and optionally the agent and knowledge they
expect: that agent is created for the run and deleted after it. An agent id runs that agent's stored
tests. Prints scenarios × pass rate and every distinct failure; exits 1 when a scenario's pass rate is
under ``--min-pass-rate`` (only scenarios marked ``expect_on_embedded`` with ``--expected-only``), 2 when
the run could not happen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

RUN_TIMEOUT_S = 1800


class Unusable(Exception):
    """The run could not happen (bad file, server refused, …): exit code 2."""


def add_parser(sub: Any) -> None:
    t = sub.add_parser("test", help="run scenario tests (a JSON file, or an agent's stored tests)")
    t.add_argument("target", help="scenario file (.json) or agent id")
    t.add_argument("--mode", choices=("text", "audio"), default="text")
    t.add_argument("--repeat", type=int, default=1, help="runs of each scenario (K)")
    t.add_argument("--concurrency", type=int, default=4, help="calls at once")
    t.add_argument("--agent", default=None, help="run a file's scenarios against this existing agent")
    t.add_argument("--min-pass-rate", type=float, default=1.0, help="a scenario under this rate fails")
    t.add_argument(
        "--expected-only",
        action="store_true",
        help="only scenarios marked expect_on_embedded decide the exit code (the others are reported)",
    )
    t.add_argument(
        "--only", action="append", default=[], help="run only scenarios whose name contains this (repeatable)"
    )
    t.add_argument("--json", dest="json_out", default=None, help="write the whole run (transcripts) here")
    t.add_argument("--url", default="http://127.0.0.1:9001", help="the server")
    t.add_argument("--api-key", default=None, help="xi-api-key (default: $XI_API_KEY or ./.api_key)")


def _refused(response: httpx.Response, what: str) -> Unusable:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:200]
    return Unusable(f"{what}: HTTP {response.status_code}: {detail}")


async def _create_agent(api: httpx.AsyncClient, pack: Any) -> str:
    created = await api.post("/v1/convai/agents", json=pack.agent)
    if created.status_code != 201:
        raise _refused(created, "could not create the file's agent")
    agent_id = created.json()["agent_id"]
    for document in pack.knowledge:
        added = await api.post(f"/v1/convai/agents/{agent_id}/knowledge", json=document)
        if added.status_code != 201:
            raise _refused(added, "could not add the file's knowledge")
    deadline = time.monotonic() + 300
    while pack.knowledge:  # the knowledge store indexes in the background
        listed = (await api.get(f"/v1/convai/agents/{agent_id}/knowledge")).json()
        statuses = [d["status"] for d in listed.get("documents", [])]
        if "failed" in statuses:
            raise Unusable("the file's knowledge could not be indexed")
        if all(s == "ready" for s in statuses) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    return agent_id


def load_file(path: Path) -> Any:
    from simulator.scenario import ScenarioFile

    try:
        return ScenarioFile.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise Unusable(f"{path}: {str(exc)[:2000]}") from None


async def run(args: argparse.Namespace, api_key: str, pack: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=args.url, headers={"xi-api-key": api_key}, timeout=60) as api:
        temporary = None
        body: dict[str, Any] = {"mode": args.mode, "repeat": args.repeat, "concurrency": args.concurrency}
        try:
            if pack is not None:
                agent_id = args.agent
                if agent_id is None:
                    if pack.agent is None:
                        raise Unusable(f"{args.target} has no agent: pass --agent ID")
                    agent_id = temporary = await _create_agent(api, pack)
                chosen = [s for s in pack.scenarios if not args.only or any(o in s.name for o in args.only)]
                if not chosen:
                    raise Unusable(f"no scenario of {args.target} matches --only")
                body["scenarios"] = [s.model_dump(mode="json") for s in chosen]
            else:
                agent_id = args.agent or args.target
            started = await api.post(f"/v1/convai/agents/{agent_id}/tests/run", json=body)
            if started.status_code == 401:
                raise Unusable("the server refused the API key: pass --api-key or set XI_API_KEY")
            if started.status_code != 202:
                raise _refused(started, "the run was refused")
            result = await _wait(api, agent_id, started.json()["id"])
        except httpx.HTTPError as exc:
            raise Unusable(f"cannot reach {args.url}: {type(exc).__name__}") from None
        finally:
            if temporary is not None:
                await api.delete(f"/v1/convai/agents/{temporary}")
    return result


async def _wait(api: httpx.AsyncClient, agent_id: str, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        got = await api.get(f"/v1/convai/agents/{agent_id}/tests/runs/{run_id}")
        if got.status_code != 200:
            raise _refused(got, "could not read the run")
        run = got.json()
        if run["status"] != "running":
            return run
        await asyncio.sleep(0.5)
    raise Unusable(f"run {run_id} did not finish in {RUN_TIMEOUT_S} s")


def report(run: dict[str, Any], min_rate: float, expected_only: bool) -> int:
    if run["status"] == "error":
        print(f"run {run['id']} failed: {run.get('error')}", file=sys.stderr)
        return 2
    rows = run["summary"]
    width = max([len(r["scenario"]) for r in rows] + [8])
    print(f"run {run['id']} · mode {run['mode']} · K={run['repeat']} · llm {run['llm']}"
          f" · rubric judge {run['judge'] or 'none (rubrics not judged)'}")  # fmt: skip
    print(f"{'scenario':<{width}}  pass rate  gate")
    failed = 0
    for r in rows:
        gated = r["expect_on_embedded"] or not expected_only
        bad = r["pass_rate"] < min_rate
        failed += gated and bad
        mark = ("FAIL" if bad else "ok") if gated else ("(not gated)" if bad else "ok (not gated)")
        extra = "  rubric not judged" if r["not_judged"] else ""
        print(f"{r['scenario']:<{width}}  {r['passed']}/{r['runs']} {r['pass_rate']:>5.0%}  {mark}{extra}")
    for r in rows:
        for message in r["failures"]:
            print(f"\n✗ {r['scenario']}: {message}")
    total = sum(r["runs"] for r in rows)
    print(f"\n{sum(r['passed'] for r in rows)}/{total} calls passed; {failed} scenario(s) failed the gate")
    return 1 if failed else 0


def main(args: argparse.Namespace, api_key: str) -> int:
    try:
        path = Path(args.target)
        pack = load_file(path) if path.suffix == ".json" or path.is_file() else None
        result = asyncio.run(run(args, api_key, pack))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=1, default=str))
        return report(result, args.min_pass_rate, args.expected_only)
    except Unusable as exc:
        print(f"simulator test: {exc}", file=sys.stderr)
        return 2
