"""The embedded models' CPU arbitration: background generation waits for urgent inference, boundedly."""

from __future__ import annotations

import threading
import time

from providers.cpu_priority import CpuPriority


def test_background_work_waits_while_urgent_work_runs_and_resumes_when_it_ends() -> None:
    cpu = CpuPriority()
    resumed_at: list[float] = []
    with cpu.urgent():
        assert cpu.busy
        waiter = threading.Thread(
            target=lambda: (cpu.yield_to_urgent(5.0), resumed_at.append(time.monotonic()))
        )
        waiter.start()
        time.sleep(0.2)
        assert not resumed_at  # still stepping aside
        released = time.monotonic()
    waiter.join(2)
    assert resumed_at and resumed_at[0] >= released and not cpu.busy


def test_waiting_is_bounded_and_free_when_nothing_is_urgent() -> None:
    cpu = CpuPriority()
    started = time.monotonic()
    cpu.yield_to_urgent(5.0)
    assert time.monotonic() - started < 0.05
    with cpu.urgent():
        started = time.monotonic()
        cpu.yield_to_urgent(0.1)  # a stuck urgent job cannot starve the LLM
        assert 0.09 <= time.monotonic() - started < 1.0
