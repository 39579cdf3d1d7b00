"""Results written as they are found: one JSON line per simulated fleet, reused on a rerun (resume).

A line holds the plan's *simulation hash* (traffic, candidates, policy, seed: everything a
simulation result depends on, plus the source of ``fluidserve/sim`` and ``fluidserve/plan``, so
that a changed simulator does not resume stale results), the fleet key and the verified record. A rerun with the same
hash skips the simulations already in the file; a changed plan starts a fresh file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fluidserve.jsonout import to_json


def simulation_hash(plan) -> str:
    """Hash of the plan fields that a simulation depends on, and of the simulator's and planner's code."""
    data = plan.model_dump(mode="json", include={"traffic", "candidates", "policy", "seed"})
    h = hashlib.sha256(json.dumps(data, sort_keys=True).encode())
    root = Path(__file__).resolve().parents[1]
    for folder in ("sim", "plan"):
        for path in sorted((root / folder).glob("*.py")):
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


class ResultStore:
    """A JSON-lines file of verified records keyed by fleet, for one plan hash (``path`` None: memory only)."""

    def __init__(self, path: str | Path | None, plan_hash: str):
        self.path = Path(path) if path is not None else None
        self.hash = plan_hash
        self.records: dict[str, dict] = {}
        self.resumed = 0
        if self.path is not None and self.path.is_file():
            lines = self.path.read_text().splitlines()
            for line in lines:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted run
                if row.get("plan_hash") == self.hash:
                    self.records[row["fleet"]] = row["record"]
            if not self.records and lines:
                self.path.write_text("")  # results of another plan: start over
            self.resumed = len(self.records)

    def get(self, fleet: str) -> dict | None:
        return self.records.get(fleet)

    def put(self, fleet: str, record: dict) -> None:
        self.records[fleet] = record
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(to_json({"plan_hash": self.hash, "fleet": fleet, "record": record}) + "\n")
