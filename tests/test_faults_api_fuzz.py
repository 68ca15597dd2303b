"""Fault suite, bad input over REST: property-based fuzzing of every route in ``/openapi.json``.

schemathesis (pinned) generates valid and invalid requests for each operation from the app's own
OpenAPI document and sends them, with the API key, to the real service (uvicorn on loopback, its own
temporary database). Checks on every response:

* ``not_a_server_error``: no 5xx, ever;
* ``json_error_body`` (below): every 4xx is JSON with a ``detail`` that says what is wrong;
* ``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``: the
  status is documented, the body is what the document says;

Not checked: ``negative_data_rejection`` (pydantic's lax mode accepts ``true`` for a number and ``0.5``
for a date on purpose; such requests are served as 1.0 and the Unix epoch, never crash).

Nothing leaves the machine: Twilio is a local stand-in that only records calls, and every address a
user-configured URL (webhooks, HTTP tools) resolves to is a documentation address the outbound guard
refuses. A fixed, derandomized number of examples per operation keeps the run bounded (~1 min).
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import API_KEY, LiveServer, make_settings
from tests.twilio_standin import TwilioStandIn

MAX_EXAMPLES = 15
ACCOUNT_SID = "AC" + "f" * 32
AUTH_TOKEN = "fuzz-auth-token"


def _detail_says_what(detail: Any) -> bool:
    if isinstance(detail, str):
        return bool(detail.strip())
    if isinstance(detail, list) and detail:
        return all(isinstance(e, dict) and str(e.get("msg", "")).strip() and "loc" in e for e in detail)
    return False


@schemathesis.check
def json_error_body(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """Every 4xx is ``application/json`` with a non-empty ``detail`` (a sentence, or located errors)."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), (
        f"{response.status_code} with content-type {content_type!r}: {response.content[:200]!r}"
    )
    body = response.json()
    assert isinstance(body, dict) and _detail_says_what(body.get("detail")), (
        f"{response.status_code} without a detail that says what is wrong: {response.content[:300]!r}"
    )
    return True


CHECKS = [
    not_a_server_error,
    json_error_body,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class FuzzTarget:
    """The service and the Twilio stand-in on an event loop of their own (a thread), so the fuzzer's
    blocking requests never stall the server they are sent to."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-target", daemon=True)
        self.ids: dict[str, str] = {}

    def _run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> str:
        self.thread.start()
        self._run(self._up())
        return self.server.base_url

    async def _up(self) -> None:
        self.twilio = await TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False).__aenter__()
        settings = make_settings(
            self.workdir,
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            twilio_api_base=self.twilio.url,
            twilio_phone_number="+14155550100",
            webhook_allow_private=False,  # every user URL goes through the guard (see _no_outbound_dns)
            dialer_tick_sec=0.2,
            api_rate_limit_per_min=0,  # the fuzzer is one key sending thousands of requests
        )
        self.server = await LiveServer(settings).__aenter__()
        await self._seed()

    async def _seed(self) -> None:
        """One of each resource, so operations on ``{id}`` paths also reach past the 404."""
        async with self.server.client() as api:

            async def made(path: str, body: dict[str, Any], key: str) -> str:
                r = await api.post(path, json=body)
                assert r.status_code in (200, 201), f"seeding {path}: {r.status_code} {r.text}"
                return str(r.json()[key])

            agent = self.ids["agent_id"] = await made("/v1/convai/agents", {"name": "Fuzz"}, "agent_id")
            base = f"/v1/convai/agents/{agent}"
            self.ids["tool_id"] = await made(f"{base}/tools", {"name": "hang_up", "kind": "end_call"}, "id")
            self.ids["document_id"] = await made(
                f"{base}/knowledge", {"name": "faq", "text": "We open at nine."}, "id"
            )
            self.ids["test_id"] = await made(
                f"{base}/tests",
                {"name": "hello", "caller": [{"say": "Hello"}], "criteria": {"agent_says": ["Hello"]}},
                "id",
            )
            self.ids["phone_number_id"] = await made(
                "/v1/convai/phone-numbers",
                {"phone_number": "+14155550100", "label": "main", "agent_id": agent},
                "id",
            )
            r = await api.post("/v1/convai/dnc", json={"phone_number": "+14155550199"})
            self.ids["entry_id"] = r.json()["entries"][0]["id"]

    def stop(self) -> None:
        async def down() -> None:
            await self.server.__aexit__(None, None, None)
            await self.twilio.__aexit__(None, None, None)

        try:
            self._run(down(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


async def _no_outbound_dns(host: str, port: int) -> list[str]:
    return ["192.0.2.1"]  # TEST-NET-1: never public, so the guard refuses it and no socket is opened


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    from core import net_guard

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(net_guard, "resolve", _no_outbound_dns)
        target = FuzzTarget(tmp_path_factory.mktemp("fuzz"))
        target.start()
        try:
            yield target
        finally:
            target.stop()


def _with_real_ids(case: schemathesis.Case, ids: dict[str, str]) -> None:
    """Path ids: mostly a real one (reaches the route's logic), sometimes the generated one (the 404
    path). Deletes keep the generated id, so the seeded resources live through the run."""
    if not case.path_parameters or case.method.upper() == "DELETE":
        return
    for name in list(case.path_parameters):
        real = ids.get(name)
        if real is not None and zlib.crc32(repr(case.path_parameters[name]).encode()) % 4:
            case.path_parameters[name] = real


class FuzzRun:
    """What one run saw: requests per operation, server errors, failing operation/mode pairs."""

    def __init__(self, target: FuzzTarget) -> None:
        self.target = target
        self.requests: Counter[str] = Counter()
        self.server_errors: list[str] = []
        self.failures: dict[str, str] = {}
        self.seconds: Counter[str] = Counter()

    def fuzz(self, operation: Any, mode: GenerationMode) -> None:
        label = f"{operation.method.upper()} {operation.path}"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
            suppress_health_check=list(HealthCheck),
        )
        def one(case: schemathesis.Case) -> None:
            _with_real_ids(case, self.target.ids)
            response = case.call(headers={"xi-api-key": API_KEY}, timeout=30)
            self.requests[label] += 1
            if response.status_code >= 500:
                self.server_errors.append(f"{label} -> {response.status_code}: {response.content[:200]!r}")
            case.validate_response(response, checks=CHECKS)

        started = time.perf_counter()
        try:
            one()
        except Unsatisfiable:
            pass  # nothing in this operation can be made invalid (no parameters, no body)
        except (Exception, BaseExceptionGroup) as exc:  # one operation's failure must not hide the others'
            self.failures[f"{label} ({mode.value})"] = str(exc)[:1500]
        self.seconds[label] += time.perf_counter() - started


def test_every_route_survives_fuzzing(fuzz_target: FuzzTarget) -> None:
    """Each operation: up to MAX_EXAMPLES valid and MAX_EXAMPLES invalid requests (derandomized)."""
    schema = schemathesis.openapi.from_url(f"{fuzz_target.server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    run = FuzzRun(fuzz_target)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run.fuzz(operation, mode)

    total = sum(run.requests.values())
    print(
        f"\nfuzz: {total} requests over {len(run.requests)}/{len(operations)} operations, "
        f"{len(run.server_errors)} server errors, {len(run.failures)} failing operation/mode pairs"
    )
    print("slowest:", [(k, round(v, 1)) for k, v in run.seconds.most_common(6)])
    assert len(operations) >= 60 and len(run.requests) == len(operations), sorted(run.requests)
    assert not run.server_errors, "\n".join(run.server_errors[:20])
    assert not run.failures, "\n\n".join(f"{k}:\n{v}" for k, v in run.failures.items())
