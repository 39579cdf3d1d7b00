"""Conformance of the ``vllm_v1`` engine with vLLM's own V1 scheduler (golden runs, no vLLM needed).

``tests/sim/golden/`` holds runs of vLLM's real ``vllm.v1.core.sched.scheduler.Scheduler``
(version in ``manifest.json``) driven by ``calibration/vllm_scheduler_reference.py`` with the
same step-time model (see ``calibration/README.md``). Each scenario's trace is replayed through
fluidserve's engine, configured like the golden run through ``fluidserve.config``
(``system.scheduler: vllm_v1``), one ``engine.step()`` at a time, and compared exactly: the
number of steps; per step the start time, the token counts (prefill, decode, KV, prefill
attention), the admitted, preempted, finished requests and the requests that sampled a token;
per request the first-token and finish times (to 1e-9 s) and the number of preemptions.
A failure names the first diverging step and field with both values.
"""

from __future__ import annotations

import csv
import functools
import gzip
import inspect
import io
import json
import math
from pathlib import Path

import pytest

from fluidserve.batch_time import BatchTimeModel

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
TIME_TOL_S = 1e-9


def _rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(io.StringIO(f.read())))


def _ids(text: str) -> list[int]:
    return sorted(int(x) for x in text.split(";")) if text else []


def load_scenario(name: str) -> dict:
    """Trace, expected steps and expected requests of one golden scenario."""
    folder = GOLDEN / name
    trace = _rows(folder / "trace.csv.gz")
    for r in trace:
        r["arrival_time"] = float(r["arrival_time"])
        r["prefill_length"] = int(r["prefill_length"])
        r["decode_length"] = int(r["decode_length"])
        r["prefix_group"] = int(r.get("prefix_group") or -1)
        r["prefix_length"] = int(r.get("prefix_length") or 0) if r["prefix_group"] >= 0 else 0
        r["priority"] = int(r.get("priority") or 0)
    return {"trace": trace, "steps": _rows(folder / "steps.csv.gz"), "requests": _rows(folder / "requests.csv.gz")}


def _step_time_fn(bt: BatchTimeModel):
    """``bt.step_time`` taking the four contract arguments (the fourth is dropped before the model has it)."""
    if "prefill_attention_tokens" in inspect.signature(bt.step_time).parameters:
        return bt.step_time
    return lambda prefill, decode, kv, attention: bt.step_time(prefill, decode, kv)


def expected_steps(trace: list[dict], steps: list[dict[str, str]], bt: BatchTimeModel) -> list[dict]:
    """Golden steps with every compared field made explicit.

    Start times chain through ``BatchTimeModel.step_time`` except where the file records an
    idle jump; ``kv_tokens`` is the cumulative sum of ``kv_tokens_delta``; the requests that
    sample a token are the decoding set (kept from the added/removed lists) plus every prefill
    chunk that reaches the request's ``num_tokens`` (prompt + tokens sampled so far).
    """
    step_time = _step_time_fn(bt)
    P = [r["prefill_length"] for r in trace]
    outputs = [0] * len(trace)  # tokens sampled so far, outside the current decode run
    joined = [0] * len(trace)  # step at which the request's current decode run began
    decoding: frozenset[int] = frozenset()
    kv = 0
    t_end = None
    out = []
    for s, row in enumerate(steps):
        start = float(row["start_s"]) if row["start_s"] else t_end
        kv += int(row["kv_tokens_delta"])
        if row["decode_removed"]:
            removed = _ids(row["decode_removed"])
            for i in removed:
                outputs[i] += s - joined[i]
            decoding = decoding.difference(removed)
        if row["decode_added"]:
            added = _ids(row["decode_added"])
            for i in added:
                joined[i] = s
            decoding = decoding.union(added)
        emitted = decoding
        admitted = sorted(_ids(row["new_ids"]) + _ids(row["resumed_ids"]))
        hits = {}
        for i in admitted:  # prefix-cache lookup at admission: num_tokens queried, k of them hit
            hits[i] = (P[i] + outputs[i], P[i] + outputs[i] - 1)  # k if it runs as a decode (1 token left)
        chunks = []
        for c in row["prefill_chunks"].split(";") if row["prefill_chunks"] else []:
            i, k, n = (int(x) for x in c.split(":"))
            chunks.append((i, k, n))
            if i in hits:
                hits[i] = (hits[i][0], k)
            if k + n == P[i] + outputs[i]:  # a prefill chunk is never run by a decoding request
                emitted = emitted | {i}
                outputs[i] += 1
        p, d, pa = int(row["prefill_tokens"]), int(row["decode_tokens"]), int(row["prefill_attention_tokens"])
        assert d == len(decoding) and p == sum(n for _, _, n in chunks), f"golden step {s} is inconsistent"
        t_end = start + step_time(p, d, kv, pa)
        out.append({
            "start_s": start, "end_s": t_end, "prefill_tokens": p, "decode_tokens": d, "kv_tokens": kv,
            "prefill_attention_tokens": pa, "num_scheduled_reqs": int(row["num_scheduled_reqs"]),
            "admitted": admitted, "lookups": list(hits.values()),
            "preempted": _ids(row["preempted_ids"]), "finished": _ids(row["finished_ids"]),
            "emitted": emitted, "prefill_chunks": chunks,
        })
    return out


@functools.cache
def golden(name: str) -> tuple[dict, BatchTimeModel, list[dict]]:
    """(scenario files, its batch-time model, its expected steps), read once per test session."""
    bt = BatchTimeModel.from_yaml(REPO / MANIFEST["scenarios"][name]["preset"])
    sc = load_scenario(name)
    return sc, bt, expected_steps(sc["trace"], sc["steps"], bt)


def make_engine(settings: dict, bt: BatchTimeModel):
    """The engine configured through ``fluidserve.config`` like the golden run."""
    from fluidserve.config import config_from_dict
    from fluidserve.sim.simulator import make_engine as engine_from_config

    sched = settings["scheduler"]
    cfg = config_from_dict({
        "system": {
            "scheduler": "vllm_v1",
            "num_gpu_blocks": sched["num_gpu_blocks"],
            "block_size": sched["block_size"],
            "B": sched["max_num_batched_tokens"],
            "max_num_seqs": sched["max_num_seqs"],
            "chunked_prefill": sched["enable_chunked_prefill"],
            "enable_prefix_caching": sched["enable_prefix_caching"],
        },
        "batch_time": bt.to_dict(),
        "policy": {"queue_policy": {"fcfs": "FCFS", "priority": "priority"}[sched["policy"]]},
        "sim": {"record_events": False},
    })
    return engine_from_config(cfg, batch_time=bt)


def replay(engine, trace: list[dict]) -> list:
    """Submit the trace and execute it one step at a time; the StepRecords."""
    handles = [
        engine.submit(i, r["arrival_time"], r["prefill_length"], r["decode_length"], priority=r["priority"],
                      prefix_group=r["prefix_group"], prefix_length=r["prefix_length"])
        for i, r in enumerate(trace)
    ]
    assert handles == list(range(len(trace))), "handles are expected to be submission indices"
    records = []
    while (rec := engine.step()) is not None:
        records.append(rec)
        if len(records) > 10_000_000:
            raise AssertionError("engine does not terminate")
    return records


FIELDS = ("admitted", "preempted", "prefill_tokens", "decode_tokens", "kv_tokens", "prefill_attention_tokens",
          "emitted", "finished", "start_s", "end_s")
"""Compared per step, causes before effects (a wrong admission shows as such, not as a wrong time)."""


def first_divergence(expected: list[dict], records: list) -> str | None:
    """The first step and field where the engine differs from vLLM, as one readable line."""
    for s, (exp, rec) in enumerate(zip(expected, records)):
        got = {
            "start_s": rec.start_s, "end_s": rec.end_s, "prefill_tokens": rec.prefill_tokens,
            "decode_tokens": rec.decode_tokens, "kv_tokens": rec.kv_tokens,
            "prefill_attention_tokens": rec.prefill_attention_tokens, "admitted": sorted(rec.admitted),
            "preempted": sorted(rec.preempted), "finished": sorted(rec.finished), "emitted": set(rec.emitted),
        }
        for f in FIELDS:
            a, b = exp[f], got[f]
            same = abs(a - b) <= TIME_TOL_S if f.endswith("_s") else a == b
            if not same:
                ctx = {k: exp[k] for k in ("prefill_chunks", "decode_tokens", "admitted", "preempted")}
                return f"step {s}: {f} vLLM={a!r} engine={b!r} (vLLM step: {ctx})"
    if len(expected) != len(records):
        return f"number of steps: vLLM={len(expected)} engine={len(records)}"
    return None


def _request_times(records: list, n: int) -> tuple[list[float], list[float], list[int]]:
    first = [math.nan] * n
    finish = [math.nan] * n
    preempts = [0] * n
    for rec in records:
        for i in rec.first_token:
            first[i] = rec.end_s
        for i in rec.finished:
            finish[i] = rec.end_s
        for i in rec.preempted:
            preempts[i] += 1
    return first, finish, preempts


@pytest.mark.parametrize("name", sorted(MANIFEST["scenarios"]))
def test_engine_matches_vllm_scheduler(name):
    settings = MANIFEST["scenarios"][name]
    sc, bt, expected = golden(name)
    assert len(expected) == settings["num_steps"]

    engine = make_engine(settings, bt)
    records = replay(engine, sc["trace"])
    divergence = first_divergence(expected, records)
    assert divergence is None, f"{name} ({MANIFEST['vllm_version']}): {divergence}"

    first, finish, preempts = _request_times(records, len(sc["trace"]))
    for row in sc["requests"]:
        i = int(row["id"])
        assert abs(first[i] - float(row["first_token_s"])) <= TIME_TOL_S, f"request {i} first token"
        assert abs(finish[i] - float(row["finish_s"])) <= TIME_TOL_S, f"request {i} finish"
        assert preempts[i] == int(row["num_preemptions"]), f"request {i} preemptions"
    assert sum(preempts) == settings["num_preemptions"]

    # prefix-cache hit rate: hit tokens / tokens looked up, over every admission (resumes included)
    queried = sum(q for e in expected for q, _ in e["lookups"])
    hit = sum(h for e in expected for _, h in e["lookups"])
    engine_rate = engine.prefix_cache_hit_rate()
    if settings["scheduler"]["enable_prefix_caching"]:
        assert hit == settings["cached_tokens_total"]
        assert engine_rate == pytest.approx(hit / queried, rel=1e-12, abs=0.0)
    else:
        assert hit == 0 and not engine_rate > 0  # nothing is looked up (vLLM reports no hit rate): NaN or 0


def test_golden_runs_are_self_consistent():
    """The golden files agree with themselves and with the manifest (independent of the engine)."""
    for name, settings in MANIFEST["scenarios"].items():
        sc, _, expected = golden(name)
        n = len(sc["trace"])
        assert len(expected) == settings["num_steps"] and len(sc["requests"]) == n == settings["num_requests"]
        emitted = [0] * n
        finish = [math.nan] * n
        for e in expected:
            for i in e["emitted"]:
                emitted[i] += 1
            for i in e["finished"]:
                finish[i] = e["end_s"]
        # every request samples exactly max_tokens tokens and finishes when the last one is sampled
        assert emitted == [r["decode_length"] for r in sc["trace"]], name
        for row in sc["requests"]:
            assert abs(finish[int(row["id"])] - float(row["finish_s"])) <= TIME_TOL_S, name
        assert sum(len(e["preempted"]) for e in expected) == settings["num_preemptions"], name
    assert MANIFEST["scenarios"]["b_overload"]["num_preemptions"] > 100  # the overload scenario preempts
    assert MANIFEST["scenarios"]["d_prefix"]["cached_prompt_tokens"] > 0  # and the prefix one hits
