"""Rules for the test suite itself: CI can only go green by running every test."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).parent
# A missing package or service must fail (pytest.fail / assert with what to install), never skip.
SKIPS = re.compile(r"importorskip|pytest\.skip\(|mark\.skip|mark\.xfail")


def test_no_test_skips_itself() -> None:
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(TESTS.glob("*.py"))
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SKIPS.search(line)
    ]
    assert offenders == []
