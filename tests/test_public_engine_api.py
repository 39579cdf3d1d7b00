"""No module outside fluidserve/sim reads engine attributes that are not its public API."""

from __future__ import annotations

import ast
from pathlib import Path

from fluidserve.sim.engine import ReplicaEngine

ROOT = Path(__file__).resolve().parents[1]
# attributes the engine's internals use and outside code must not
PRIVATE = {
    "g0", "s0", "state", "snapshots", "events", "mem_events", "pending", "prefilling", "n_dec", "n_wait",
    "used", "gid", "arr", "P0", "D0", "calendar", "cnt", "kv_base", "wait_head", "wait_main", "swapped_heap",
    "total_blocks", "step_index", "kv", "running", "waiting", "chunked", "bs", "swaps", "preempts", "comp_t",
    "enter_t", "ft_step", "step_end", "reject_reason", "n_swapped", "prefilled", "partial", "c", "o", "nb",
}


def public_names() -> set[str]:
    return {n for n in dir(ReplicaEngine) if not n.startswith("_")} | {"submit", "run", "abort", "output_tokens"}


def test_private_names_are_not_public():
    assert not PRIVATE & public_names()


def test_no_module_outside_sim_reads_engine_internals():
    offenders = []
    for path in (ROOT / "fluidserve").rglob("*.py"):
        if path.parent.name == "sim" or "sim" in path.relative_to(ROOT / "fluidserve").parts[:1]:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            # engine objects are named engine / eng / e / engines[...] in the consumers
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
                base = node.value
                name = base.id if isinstance(base, ast.Name) else (
                    base.value.id if isinstance(base, ast.Subscript) and isinstance(base.value, ast.Name) else None)
                if name in {"engine", "eng", "e", "engines", "self_engine"} or (
                    isinstance(base, ast.Attribute) and base.attr == "engine"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not offenders, offenders
