"""The SDR starter pack (``scenarios/starter_pack.json``), served by the API so a console user, who has
no copy of the repository, can add it to an agent."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from simulator.scenario import ScenarioFile

PACK_PATH = Path(__file__).with_name("starter_pack.json")


@lru_cache(maxsize=1)
def starter_pack() -> ScenarioFile:
    return ScenarioFile.model_validate_json(PACK_PATH.read_bytes())
