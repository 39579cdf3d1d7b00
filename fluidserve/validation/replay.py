"""Replay a real run in the simulator and compute its metrics the way the client defined them.

:func:`build_requests` rebuilds the requests a run sent: the stages' arrivals (inference-perf
``constant`` = evenly spaced, ``poisson``), each request's prompt (for ``shared_prefix`` data,
request ``i`` uses prompt ``i mod (groups * prompts_per_group)``, with the system prompt shared
by its group) and its output length (the requested ``output_len``: ``ignore_eos`` makes the server
generate exactly that many tokens; the client's own count of the streamed text is reported beside
it). Prompt lengths are the measured mean prompt length of the stage (what the server tokenized).

Prefix caching (vLLM's default): a prompt seen before hits the cache for all its full 16-token
blocks but the last token (vLLM always computes at least one token). The simulator's ``vllm_v1``
scheduler models it: requests of one prompt form a prefix group over the whole prompt
(:attr:`Requests.cached_tokens` is the hit expected while the cache holds every prompt; the
system prompt a new prompt shares with its group, which only its first round would hit, is not
modelled).

:func:`predict_run` simulates the run and returns per stage the metrics of
:data:`fluidserve.validation.runs.METRICS` (seconds), with the client's definitions: E2E and TTFT
from the request's send time, TPOT = (last - first token) / (client timeline entries - 1), ITL the
mean gap of the pooled timelines, output tokens/s over the stage's window; requests whose E2E
exceeds the client's timeout count as failures; a stage with failures or a growing queue is
overloaded (:func:`fluidserve.validation.runs.is_overloaded`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fluidserve import specs
from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError
from fluidserve.validation.runs import METRICS, Run, is_overloaded

BLOCK_TOKENS = 16  # vLLM's default KV block size (prefix-cache granularity)
STAGE_GAP_S = 1.0  # inference-perf load.interval between stages


@dataclass
class Requests:
    """The rebuilt requests of a run (arrays of equal length, arrival order)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    cached_tokens: np.ndarray
    output_tokens: np.ndarray
    stage: np.ndarray
    stage_start_s: np.ndarray  # per stage
    prompt_id: np.ndarray  # the prompt a request uses (-1: a prompt of its own)
    weight: np.ndarray  # weight in the stage means (1; > 1 for warm requests of a shortened replay)


def _arrivals(rate: float, duration_s: float, kind: str, rng: np.random.Generator, n: int | None = None,
              burstiness: float = 1.0) -> np.ndarray:
    if not np.isfinite(rate):
        return np.zeros(int(n or 1))
    if kind == "constant":
        return np.arange(int(round(rate * duration_s))) / rate
    count = int(n) if n is not None else int(round(rate * duration_s))
    # vLLM's benchmark: gamma inter-arrivals with shape = burstiness, mean 1/rate (Poisson at 1)
    gaps = rng.gamma(burstiness, 1.0 / (rate * burstiness), size=count)
    return np.cumsum(gaps) - gaps[0]


def build_requests(run: Run, seed: int = 0, max_stage_s: float | None = None) -> Requests:
    """The requests ``run`` sent, with their prefix-cache hits (see the module docstring).

    ``max_stage_s``: keep only the first ``max_stage_s`` seconds of each stage's arrivals.
    """
    rng = np.random.default_rng(seed)
    arr, prompt, out, stage_of, starts, full_count = [], [], [], [], [], []
    t0 = 0.0
    sp = run.shared_prefix
    for st in run.stages:
        n = len(st.input_lens) if st.input_lens is not None else None
        a = _arrivals(st.rate, st.duration_s, st.arrivals, rng, n, st.burstiness)
        full_count.append(len(a))
        if max_stage_s is not None and len(a) > 1:
            a = a[a < max_stage_s]
        if len(a) == 0:
            raise InputError(f"{run.name}: stage {st.index} sends no requests (rate {st.rate}, {st.duration_s} s)")
        starts.append(t0)
        arr.append(a + t0)
        if st.input_lens is not None:
            prompt.append(np.asarray(st.input_lens[: len(a)], dtype=np.int64))
            if len(prompt[-1]) < len(a):
                raise InputError(f"{run.name}: {len(a)} requests but {len(prompt[-1])} input lengths")
        else:
            if not np.isfinite(st.prompt_len_mean):
                raise InputError(f"{run.name}: stage {st.index} has no measured prompt length")
            prompt.append(np.full(len(a), int(round(st.prompt_len_mean)), dtype=np.int64))
        if st.output_lens is not None:
            out.append(np.asarray(st.output_lens[: len(a)], dtype=np.int64))
        elif sp is not None:
            out.append(np.full(len(a), sp.output_len, dtype=np.int64))
        elif st.output_len_mean:
            out.append(np.full(len(a), int(round(st.output_len_mean)), dtype=np.int64))
        else:
            raise InputError(f"{run.name}: stage {st.index} has no output length")
        stage_of.append(np.full(len(a), st.index, dtype=np.int64))
        t0 = float(arr[-1][-1]) + (1.0 / st.rate if np.isfinite(st.rate) else 0.0) + STAGE_GAP_S
    arrival = np.concatenate(arr)
    P = np.maximum(np.concatenate(prompt), 1)
    D = np.maximum(np.concatenate(out), 1)
    cached = np.zeros(len(P), dtype=np.int64)
    prompt_id = np.full(len(P), -1, dtype=np.int64)
    if sp is not None:
        prompt_id = np.arange(len(P)) % (sp.num_groups * sp.num_prompts_per_group)
        n_prompts = sp.num_groups * sp.num_prompts_per_group
        seen_prompt = np.zeros(n_prompts, dtype=bool)
        seen_group = np.zeros(sp.num_groups, dtype=bool)
        full_hit = (P - 1) // BLOCK_TOKENS * BLOCK_TOKENS
        system_hit = min((sp.system_prompt_len + 1) // BLOCK_TOKENS * BLOCK_TOKENS, BLOCK_TOKENS * 10**9)
        for i in range(len(P)):
            j = i % n_prompts
            g = j // sp.num_prompts_per_group
            if seen_prompt[j]:
                cached[i] = full_hit[i]
            elif seen_group[g]:
                cached[i] = min(system_hit, full_hit[i])
            seen_prompt[j] = True
            seen_group[g] = True
    stage = np.concatenate(stage_of)
    # a shortened replay keeps every cold request (a prompt's first round, in the first seconds) and
    # a sample of the warm ones: weight the warm ones up to their share of the whole stage
    weight = np.ones(len(P))
    if max_stage_s is not None:
        cold = cached < (P - 1) // BLOCK_TOKENS * BLOCK_TOKENS
        for k, n_full in enumerate(full_count):
            sel = stage == k
            warm = sel & ~cold
            if warm.any() and n_full > sel.sum():
                weight[warm] = (n_full - (sel & cold).sum()) / warm.sum()
    return Requests(arrival, P, cached, D, stage, np.asarray(starts), prompt_id, weight)


def sim_config(run: Run, gpu: str, model: specs.ModelSpec, batch_time: BatchTimeModel) -> dict:
    """The simulator config of a run's vLLM server: the ``vllm_v1`` scheduler (chunked prefill,
    recompute, prefix caching), its token budget and sequence limit, KV capacity at its
    ``gpu_memory_utilization``."""
    m_total = specs.derive_m_total(gpu, model, run.gpu_memory_utilization, run.tensor_parallel)
    return {
        "name": f"replay-{run.name}",
        "system": {
            "scheduler": "vllm_v1", "enable_prefix_caching": True, "chunked_prefill": True,
            "M_total": m_total, "B": run.max_num_batched_tokens, "max_num_seqs": run.max_num_seqs,
            "block_size": BLOCK_TOKENS,
            "kv_bytes_per_token": specs.kv_bytes_per_token(model, tensor_parallel=run.tensor_parallel),
        },
        "batch_time": batch_time.to_dict(),
        "sim": {"record_events": False, "snapshot_every": 10**9},
    }


def simulate_requests(run: Run, gpu: str, model: specs.ModelSpec, batch_time: BatchTimeModel,
                      reqs: Requests) -> tuple[np.ndarray, np.ndarray]:
    """First-token and completion times (s; NaN if never) of every request, from the simulator.

    Requests that use the same prompt form one prefix group over the whole prompt, so the engine's
    prefix cache (vLLM's block hashing) finds every full block but the last token's; requests
    longer than ``max_model_len`` are rejected by vLLM and left out.
    """
    from fluidserve.config import config_from_dict
    from fluidserve.sim.simulator import simulate
    from fluidserve.workload.base import Workload

    keep = np.ones(len(reqs.arrival_s), dtype=bool)
    if run.max_model_len:
        keep &= reqs.prompt_tokens + reqs.output_tokens <= run.max_model_len
    cfg = config_from_dict(sim_config(run, gpu, model, batch_time), f"replay of {run.name}")
    wl = Workload(reqs.arrival_s[keep], reqs.prompt_tokens[keep], reqs.output_tokens[keep], name=run.name,
                  prefix_group=reqs.prompt_id[keep], prefix_length=np.where(reqs.prompt_id[keep] >= 0,
                                                                             reqs.prompt_tokens[keep], 0))
    res = simulate(cfg, wl).requests
    first = np.full(len(keep), np.nan)
    comp = np.full(len(keep), np.nan)
    idx = np.flatnonzero(keep)[res["req_id"].to_numpy()]
    first[idx] = res["first_token_time"].to_numpy()
    comp[idx] = res["completion_time"].to_numpy()
    return first, comp


def stage_metrics(run: Run, reqs: Requests, first: np.ndarray, comp: np.ndarray,
                  overhead_s: float = 0.0, first_token_lag_steps: float = 0.0) -> list[dict]:
    """Predicted metrics per stage (inference-perf definitions, see the module docstring).

    ``overhead_s`` is added to TTFT and E2E; the first streamed text reaches the client
    ``first_token_lag_steps`` of the request's mean decode steps after its prefill step.
    """
    out = []
    step_s = np.where(reqs.output_tokens > 1, (comp - first) / np.maximum(reqs.output_tokens - 1, 1), 0.0)
    first = first + first_token_lag_steps * step_s
    e2e_all = comp - reqs.arrival_s + overhead_s
    ttft_all = first - reqs.arrival_s + overhead_s
    for st in run.stages:
        sel = reqs.stage == st.index
        e2e = e2e_all[sel]
        ok = np.isfinite(e2e) & (e2e <= run.client_timeout_s)
        n_fail = int((~ok).sum())
        k = st.client_tokens_per_token
        D = reqs.output_tokens[sel][ok].astype(np.float64)
        dur = (comp - first)[sel][ok]
        entries = np.maximum(k * D - 1.0, 1.0)
        pred: dict = {}
        if ok.any():
            ttft = ttft_all[sel][ok]
            e = e2e[ok]
            w = reqs.weight[sel][ok]
            multi = D > 1
            pred = {
                "e2e_mean": float(np.average(e, weights=w)), "e2e_p90": float(np.percentile(e, 90)),
                "e2e_p99": float(np.percentile(e, 99)),
                "ttft_mean": float(np.average(ttft, weights=w)), "ttft_p90": float(np.percentile(ttft, 90)),
                "ttft_p99": float(np.percentile(ttft, 99)),
                "tpot_mean": float(np.average((dur / entries)[multi], weights=w[multi])) if multi.any() else float("nan"),
                "itl_mean": float((w * dur).sum() / (w * entries).sum()),
                "output_tokens_per_s": float(D.sum() / max(
                    np.nanmax(comp[sel][ok]) - np.min(reqs.arrival_s[sel]), 1e-9)),
            }
        else:
            pred = {k_: float("nan") for k_ in METRICS}
        pred["output_len_mean"] = float(reqs.output_tokens[sel].mean())
        pred["requests"] = int(ok.sum())
        pred["failures"] = n_fail
        pred["overloaded"] = is_overloaded(n_fail, pred["ttft_mean"], st.duration_s)
        out.append(pred)
    return out


def predict_run(run: Run, gpu: str, model: specs.ModelSpec, batch_time: BatchTimeModel,
                overhead_s: float = 0.0, seed: int = 0, reqs: Requests | None = None,
                first_token_lag_steps: float = 0.0) -> list[dict]:
    """Simulate ``run`` with ``batch_time`` and return the predicted metrics of each stage."""
    reqs = reqs if reqs is not None else build_requests(run, seed)
    first, comp = simulate_requests(run, gpu, model, batch_time, reqs)
    return stage_metrics(run, reqs, first, comp, overhead_s, first_token_lag_steps)
