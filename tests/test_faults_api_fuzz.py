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
refuses. A fixed, derandomized number of examples per operation keeps the run bounded (~1 min); a GET
identical to one already sent (a real id substituted into several examples) is not sent again.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
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

from tests.conftest import API_KEY, ROOT, SQLITE_ONLY
from tests.service_process import ServiceProcess, service_env

MAX_EXAMPLES = 15


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


class FuzzService(ServiceProcess):
    """The service in a process of its own (``tests/fuzz_service.py``: Twilio stand-in, no outbound DNS),
    so the fuzzer's request generation and the server each have a core."""

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.fuzz_service", str(self.port)],
                cwd=self.workdir,
                env={**self.env, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.proc


async def _seed(service: FuzzService) -> dict[str, str]:
    """One of each resource, so operations on ``{id}`` paths also reach past the 404."""
    ids: dict[str, str] = {}
    async with service.client() as api:

        async def made(path: str, body: dict[str, Any], key: str) -> str:
            r = await api.post(path, json=body)
            assert r.status_code in (200, 201), f"seeding {path}: {r.status_code} {r.text}"
            return str(r.json()[key])

        agent = ids["agent_id"] = await made("/v1/convai/agents", {"name": "Fuzz"}, "agent_id")
        base = f"/v1/convai/agents/{agent}"
        ids["tool_id"] = await made(f"{base}/tools", {"name": "hang_up", "kind": "end_call"}, "id")
        ids["document_id"] = await made(
            f"{base}/knowledge", {"name": "faq", "text": "We open at nine."}, "id"
        )
        ids["test_id"] = await made(
            f"{base}/tests",
            {"name": "hello", "caller": [{"say": "Hello"}], "criteria": {"agent_says": ["Hello"]}},
            "id",
        )
        ids["phone_number_id"] = await made(
            "/v1/convai/phone-numbers",
            {"phone_number": "+14155550100", "label": "main", "agent_id": agent},
            "id",
        )
        r = await api.post("/v1/convai/dnc", json={"phone_number": "+14155550199"})
        ids["entry_id"] = r.json()["entries"][0]["id"]
    return ids


@dataclass
class FuzzTarget:
    base_url: str
    ids: dict[str, str]
    service: FuzzService


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    workdir = tmp_path_factory.mktemp("fuzz")
    env = service_env(
        workdir,
        webhook_allow_private="false",  # every user URL goes through the outbound guard
        dialer_tick_sec=0.2,
        api_rate_limit_per_min=0,  # the fuzzer is one key sending thousands of requests
        log_level="WARNING",
    )
    service = FuzzService(workdir, env)

    async def up() -> dict[str, str]:
        await service.__aenter__()
        return await _seed(service)

    ids = asyncio.run(up())
    try:
        yield FuzzTarget(service.base_url, ids, service)
    finally:
        asyncio.run(service.__aexit__(None, None, None))


def _with_real_ids(case: schemathesis.Case, ids: dict[str, str]) -> None:
    """Path ids: mostly a real one (reaches the route's logic), sometimes the generated one (the 404
    path). Deletes keep the generated id, so the seeded resources live through the run."""
    if not case.path_parameters or case.method.upper() == "DELETE":
        return
    for name in list(case.path_parameters):
        real = ids.get(name)
        if real is not None and zlib.crc32(repr(case.path_parameters[name]).encode()) % 4:
            case.path_parameters[name] = real


def _read_timeout(label: str) -> float:
    """A hung route fails after 30 s; ``tests/run?wait=true`` waits, by contract, for its run, which queues
    behind the runs the fuzzer started before it (one at a time per process), so it gets longer."""
    return 240.0 if label.endswith("/tests/run") else 30.0


class FuzzRun:
    """What one run saw: requests per operation, server errors, failing operation/mode pairs."""

    def __init__(self, target: FuzzTarget) -> None:
        self.target = target
        self.requests: Counter[str] = Counter()
        self.server_errors: list[str] = []
        self.failures: dict[str, str] = {}
        self.seconds: Counter[str] = Counter()
        self.repeats = 0  # GETs identical to one already sent (mostly a real id put in again): not resent
        self._sent: set[str] = set()

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
            if case.method.upper() == "GET":  # safe: the same request again proves nothing more
                request = repr((label, case.path_parameters, case.query, case.headers, case.cookies))
                if request in self._sent:
                    self.repeats += 1
                    return
                self._sent.add(request)
            response = case.call(headers={"xi-api-key": API_KEY}, timeout=_read_timeout(label))
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


def _nothing_to_make_invalid(operation: Any) -> bool:
    """No body, no query, header or cookie parameter, and path parameters that are any string: no request
    to this operation breaks its schema, so negative generation can only end in ``Unsatisfiable`` (after
    hundreds of discarded drawings, ~0.4 s each of 45 such operations) without sending anything."""
    if any(list(group) for group in (operation.body, operation.query, operation.headers, operation.cookies)):
        return False
    plain = {"type": "string"}
    return all(
        {k: v for k, v in p.definition.get("schema", {}).items() if k != "title"} == plain
        for p in operation.path_parameters
    )


def test_every_route_survives_fuzzing(fuzz_target: FuzzTarget) -> None:
    """Each operation: up to MAX_EXAMPLES valid and MAX_EXAMPLES invalid requests (derandomized)."""
    schema = schemathesis.openapi.from_url(f"{fuzz_target.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    run = FuzzRun(fuzz_target)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and _nothing_to_make_invalid(operation):
                continue
            run.fuzz(operation, mode)

    total = sum(run.requests.values())
    print(
        f"\nfuzz: {total} requests over {len(run.requests)}/{len(operations)} operations, "
        f"{len(run.server_errors)} server errors, {len(run.failures)} failing operation/mode pairs, "
        f"{run.repeats} repeated GETs not resent"
    )
    log = fuzz_target.service.output()
    assert "Traceback" not in log and '"level": "ERROR"' not in log, log[-3000:]
    print("slowest:", [(k, round(v, 1)) for k, v in run.seconds.most_common(6)])
    assert len(operations) >= 60 and len(run.requests) == len(operations), sorted(run.requests)
    assert not run.server_errors, "\n".join(run.server_errors[:20])
    assert not run.failures, "\n\n".join(f"{k}:\n{v}" for k, v in run.failures.items())


# ---------------------------------------------------------------- what the fuzzer found (regressions)


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_dates_out_of_range_are_422_not_500(app_client: httpx.AsyncClient) -> None:
    """Found by the fuzzer: dates that overflow once moved to UTC, and Unix seconds past year 9999,
    were 500s (OverflowError / ValueError in the database layer); a naive ``before`` on deliveries too."""
    for query in (
        "call_start_before_unix=16911455426500943872",
        "call_start_after_unix=-1",
        "before=0001-01-01T00:00:00%2B01:00",
        "after=9999-12-31T23:59:59-01:00",
    ):
        r = await app_client.get(f"/v1/convai/conversations?{query}")
        assert r.status_code == 422, (query, r.text)
        assert r.json()["detail"][0]["loc"][0] == "query", r.text
    cursor = base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+01:00","x"]').decode()
    r = await app_client.get("/v1/convai/conversations", params={"cursor": cursor})
    assert r.status_code == 400 and r.json() == {"detail": "invalid cursor"}
    ok = await app_client.get("/v1/convai/conversations?before=2026-01-01T00:00:00&call_start_after_unix=0")
    assert ok.status_code == 200, ok.text

    hook = await app_client.post("/v1/convai/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code == 201, hook.text
    naive = await app_client.get(
        f"/v1/convai/webhooks/{hook.json()['id']}/deliveries", params={"before": "2026-01-01T00:00:00"}
    )
    assert naive.status_code == 200, naive.text


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_a_body_that_is_not_json_gets_a_4xx_that_says_so(app_client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    broken = await app_client.post("/v1/convai/agents", content=b'{"name": ', headers=headers)
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["msg"].startswith("JSON decode error: Expecting value"), broken.text
    binary = await app_client.post("/v1/convai/agents", content=b"\x80\x81 not utf-8", headers=headers)
    assert binary.status_code == 400
    assert "could not be read: send UTF-8 JSON" in binary.json()["detail"], binary.text
