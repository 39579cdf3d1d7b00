"""Drive vLLM's own V1 scheduler with a trace and fluidserve's step times (the conformance reference).

vLLM's ``vllm.v1.core.sched.scheduler.Scheduler`` decides every batch (admission, chunking,
prefix-cache hits, KV blocks, recompute preemption); nothing runs a model. The clock advances
by ``BatchTimeModel.step_time`` of each scheduled batch, so the per-step and per-request
tables it writes are what fluidserve's ``vllm_v1`` engine must reproduce exactly
(``tests/sim/test_vllm_conformance.py``). Runs on CPU: ``pip install vllm`` into its own venv
(see ``calibration/README.md``); no GPU, no network, no weights, no tokenizer.

Loop (one engine step)::

    add every request with arrival_time <= t to the scheduler (trace order)
    out = scheduler.schedule()
    if out schedules no token: t = next arrival (stop when none is left)
    else:
        dt = BatchTimeModel.step_time(prefill_tokens, decode_tokens, kv_tokens,
                                      prefill_attention_tokens)
        one fabricated sampled token for each request whose computed tokens reach its
        num_tokens (last prefill chunk, recompute finished, or decode)
        scheduler.update_from_output(out, ModelRunnerOutput(...)); t += dt

Step quantities (the contract of HELPERS.md), per scheduled request with ``n`` scheduled
tokens and ``k`` tokens computed (or prefix-cached) before the step:

* a request *decodes* when ``n == 1``, ``k >= num_prompt_tokens`` and ``k == num_tokens - 1``
  (it feeds its last sampled token and samples the next one); ``decode_tokens`` counts them
  and ``kv_tokens`` sums their ``k``;
* every other scheduled request runs a prefill chunk (prompt, or prompt + generated tokens
  after a recompute preemption): ``prefill_tokens`` sums ``n`` (prefix-cache hits are not
  scheduled, so they are excluded) and ``prefill_attention_tokens`` sums ``n * (k + n)``.

Prompt token ids are fabricated: requests of one ``prefix_group`` share their first
``prefix_length`` ids (the group's system prompt); every other position is private to the
request, and the first private token encodes the request index, so two requests never share
more than their group prefix.

Outputs (``--output-dir``): ``steps.csv.gz`` (one row per executed step), ``requests.csv.gz``
(one row per request) and ``summary.json``. Columns are documented in ``STEP_COLUMNS`` and
``REQUEST_COLUMNS`` below and in ``calibration/README.md``.

Usage::

    HF_HUB_OFFLINE=1 PYTHONPATH=. /work/vllm-venv/bin/python calibration/vllm_scheduler_reference.py \\
        --trace trace.csv --num-gpu-blocks 2000 --max-num-batched-tokens 2048 \\
        --max-num-seqs 256 --enable-prefix-caching \\
        --preset calibration/data/h100_llama31_8b_preset.yaml --output-dir out/ [--json]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import inspect
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fluidserve.batch_time import BatchTimeModel  # noqa: E402
from fluidserve.errors import InputError, MissingDependencyError, cli_errors  # noqa: E402

BLOCK_SIZE = 16
"""KV block size in tokens (vLLM's default on GPUs)."""

MAX_MODEL_LEN = 131072
"""Llama-3.1-8B's context length (``max_position_embeddings`` of the config below)."""

PRIVATE_TOKEN_BASE = 64000
"""Private prompt tokens use ids >= this; group prefixes use ids below it."""

LLAMA31_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "max_position_embeddings": MAX_MODEL_LEN,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "bos_token_id": 128000,
    "eos_token_id": 128001,
}
"""A Llama-3.1-8B-shaped HF config (shapes only: no weights, no tokenizer are needed)."""

MODEL_DIR = REPO / "calibration" / "vllm_llama31_8b_config"
"""Folder holding ``config.json`` (written by this script if missing; committed)."""

STEP_COLUMNS = (
    # one row per executed step, in order (row i = step i, 0-based)
    "start_s",  # step start, written only when it differs from the previous step's end (an idle jump);
    # otherwise start = previous start + BatchTimeModel.step_time of the previous row
    "prefill_tokens",
    "decode_tokens",
    "kv_tokens_delta",  # kv_tokens minus the previous step's (kv_tokens = the cumulative sum; compresses well)
    "prefill_attention_tokens",
    "num_scheduled_reqs",
    "prefill_chunks",  # "id:k:n;..." in scheduling order (k computed/cached before, n scheduled)
    "decode_added",  # ids decoding in this step but not in the previous one
    "decode_removed",  # ids decoding in the previous step but not in this one
    "new_ids",  # first admissions (scheduled_new_reqs), ";"-separated
    "resumed_ids",  # recompute victims re-admitted in this step
    "preempted_ids",  # requests preempted while this step was scheduled
    "finished_ids",  # requests whose last token was sampled in this step
)
"""Columns of ``steps.csv.gz``; request ids are 0-based trace row indices (arrival order)."""

REQUEST_COLUMNS = (
    "id",
    "arrival_s",
    "first_token_s",  # end of the step that sampled output token 1
    "finish_s",  # end of the step that sampled output token decode_length
    "num_preemptions",
    "cached_prompt_tokens",  # prefix-cache hit at the first admission
    "cached_tokens_total",  # hits summed over every admission (resumes included)
)
"""Columns of ``requests.csv.gz``."""


# ------------------------------------------------------------------------------ trace
def read_trace(path: Path) -> list[dict]:
    """Rows of a trace CSV (arrival_time, prefill_length, decode_length[, prefix_group, prefix_length, priority]).

    Rows are sorted by arrival (stable); request ids are the sorted row indices.
    """
    if not path.is_file():
        raise InputError(f"trace file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        for need in ("arrival_time", "prefill_length", "decode_length"):
            if need not in cols:
                raise InputError(f"{path}: missing column {need!r} (has {', '.join(cols)})")
        has_prefix = "prefix_group" in cols and "prefix_length" in cols
        has_priority = "priority" in cols
        rows = []
        for i, raw in enumerate(reader, start=1):
            raw = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            try:
                arrival = float(raw["arrival_time"])
                prefill = int(raw["prefill_length"])
                decode = int(raw["decode_length"])
                group = int(raw["prefix_group"]) if has_prefix and raw["prefix_group"] != "" else -1
                plen = int(raw["prefix_length"]) if has_prefix and raw["prefix_length"] != "" else 0
                priority = int(raw["priority"]) if has_priority and raw["priority"] != "" else 0
            except ValueError as exc:
                raise InputError(f"{path} row {i}: not a number ({exc})") from exc
            if not math.isfinite(arrival) or arrival < 0:
                raise InputError(f"{path} row {i}: arrival_time is {arrival!r}, must be >= 0")
            if prefill < 1 or decode < 1:
                raise InputError(f"{path} row {i}: prefill_length and decode_length must be >= 1")
            if group >= 0 and not 0 <= plen <= prefill:
                raise InputError(f"{path} row {i}: prefix_length {plen} must be in [0, prefill_length={prefill}]")
            if group < 0:
                plen = 0
            rows.append({"arrival_s": arrival, "P": prefill, "D": decode, "group": group, "plen": plen,
                         "priority": priority})
    if not rows:
        raise InputError(f"{path}: no requests")
    order = sorted(range(len(rows)), key=lambda j: rows[j]["arrival_s"])
    return [rows[j] for j in order]


def prompt_token_ids(index: int, row: dict) -> list[int]:
    """Fabricated prompt: the group's shared prefix, then tokens private to request ``index``.

    Group ``g``'s prefix token j is ``(g * 7919 + j * 104729) % PRIVATE_TOKEN_BASE`` with token 0
    equal to ``g % PRIVATE_TOKEN_BASE`` (distinct groups differ at once); private token j of
    request i is ``PRIVATE_TOKEN_BASE + (i * 31 + j * 7) % 64000``, whose first one is
    ``PRIVATE_TOKEN_BASE + i % 64000`` (unique per request up to 64,000 requests).
    """
    g, plen, P = row["group"], row["plen"], row["P"]
    ids = []
    if g >= 0:
        ids = [g % PRIVATE_TOKEN_BASE] + [(g * 7919 + j * 104729) % PRIVATE_TOKEN_BASE for j in range(1, plen)]
    for j in range(P - len(ids)):
        ids.append(PRIVATE_TOKEN_BASE + ((index * 31 if j else index) + j * 7) % 64000)
    return ids


# ------------------------------------------------------------------------------ vLLM
def import_vllm():
    """The vLLM modules used here, or MissingDependencyError (exit 2) naming the install command."""
    try:
        import torch
        import vllm
        from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
        from vllm.sampling_params import SamplingParams
        from vllm.utils.hashing import get_hash_fn_by_name
        from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
        from vllm.v1.core.sched.scheduler import Scheduler
        from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
        from vllm.v1.outputs import ModelRunnerOutput
        from vllm.v1.request import Request
        from vllm.v1.structured_output import StructuredOutputManager
    except ImportError as exc:
        raise MissingDependencyError(
            "vllm is not installed in this Python; install it into its own venv: python3 -m venv "
            "/work/vllm-venv && PIP_CONFIG_FILE=/dev/null /work/vllm-venv/bin/pip install vllm==0.33.0 "
            f"(see calibration/README.md) [{exc}]"
        ) from exc
    return {
        "torch": torch, "vllm": vllm, "CacheConfig": CacheConfig, "DeviceConfig": DeviceConfig,
        "ModelConfig": ModelConfig, "SchedulerConfig": SchedulerConfig, "VllmConfig": VllmConfig,
        "SamplingParams": SamplingParams, "get_hash_fn_by_name": get_hash_fn_by_name,
        "get_request_block_hasher": get_request_block_hasher, "init_none_hash": init_none_hash,
        "Scheduler": Scheduler, "FullAttentionSpec": FullAttentionSpec, "KVCacheConfig": KVCacheConfig,
        "KVCacheGroupSpec": KVCacheGroupSpec, "ModelRunnerOutput": ModelRunnerOutput,
        "Request": Request, "StructuredOutputManager": StructuredOutputManager,
    }


def model_dir() -> Path:
    """The folder with the Llama-3.1-8B-shaped ``config.json`` (written when missing)."""
    path = MODEL_DIR / "config.json"
    if not path.is_file():
        MODEL_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(LLAMA31_8B_CONFIG, indent=2) + "\n")
    return MODEL_DIR


def make_scheduler(v, num_gpu_blocks: int, max_num_batched_tokens: int, max_num_seqs: int, enable_prefix_caching: bool,
                   policy: str = "fcfs"):
    """vLLM's V1 ``Scheduler`` on CPU with one full-attention KV group of ``num_gpu_blocks`` blocks."""
    torch = v["torch"]
    model_config = v["ModelConfig"](
        model=str(model_dir()), skip_tokenizer_init=True, max_model_len=MAX_MODEL_LEN, dtype="bfloat16"
    )
    cache_config = v["CacheConfig"](block_size=BLOCK_SIZE, enable_prefix_caching=enable_prefix_caching)
    cache_config.num_gpu_blocks = num_gpu_blocks
    scheduler_config = v["SchedulerConfig"](
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        max_model_len=MAX_MODEL_LEN,
        is_encoder_decoder=False,
        enable_chunked_prefill=True,
        policy=policy,
    )
    vllm_config = v["VllmConfig"](
        model_config=model_config,
        cache_config=cache_config,
        scheduler_config=scheduler_config,
        device_config=v["DeviceConfig"](device="cpu"),
    )
    spec = v["FullAttentionSpec"](block_size=BLOCK_SIZE, num_kv_heads=8, head_size=128, dtype=torch.bfloat16)
    kv_cache_config = v["KVCacheConfig"](
        num_blocks=num_gpu_blocks, kv_cache_tensors=[], kv_cache_groups=[v["KVCacheGroupSpec"](["model.layers"], spec)]
    )
    scheduler = v["Scheduler"](
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        structured_output_manager=v["StructuredOutputManager"](vllm_config),
        block_size=BLOCK_SIZE,
        log_stats=False,
    )
    block_hasher = None
    if enable_prefix_caching:
        hash_fn = v["get_hash_fn_by_name"](vllm_config.cache_config.prefix_caching_hash_algo)
        v["init_none_hash"](hash_fn)
        block_hasher = v["get_request_block_hasher"](BLOCK_SIZE, hash_fn, vllm_config.num_hash_lookahead_tokens)
    return scheduler, vllm_config, block_hasher


def scheduler_settings(vllm_config) -> dict:
    """The scheduler settings that shape the batches (for the manifest)."""
    sc, cc = vllm_config.scheduler_config, vllm_config.cache_config
    keys = (
        "max_num_batched_tokens", "max_num_scheduled_tokens", "max_num_seqs", "max_num_active_seqs",
        "long_prefill_token_threshold", "enable_chunked_prefill", "policy", "scheduler_reserve_full_isl",
        "watermark", "prefill_schedule_interval",
    )
    out = {k: getattr(sc, k, None) for k in keys}
    out.update(
        block_size=cc.block_size, num_gpu_blocks=cc.num_gpu_blocks, enable_prefix_caching=cc.enable_prefix_caching,
        prefix_caching_hash_algo=cc.prefix_caching_hash_algo, max_model_len=vllm_config.model_config.max_model_len,
        scheduler_class="vllm.v1.core.sched.scheduler.Scheduler (synchronous; async scheduling not used)",
    )
    return out


# ------------------------------------------------------------------------------ run
def _ids(ids) -> str:
    return ";".join(str(i) for i in sorted(ids))


def _step_time_fn(bt: BatchTimeModel):
    """``step_time`` with all four contract arguments when the model takes the fourth."""
    if "prefill_attention_tokens" in inspect.signature(bt.step_time).parameters:
        return lambda p, d, kv, pa: bt.step_time(p, d, kv, pa)
    return lambda p, d, kv, pa: bt.step_time(p, d, kv)  # BatchTimeModel before issue 13: no attention term


def run(trace: list[dict], bt: BatchTimeModel, num_gpu_blocks: int, max_num_batched_tokens: int, max_num_seqs: int,
        enable_prefix_caching: bool, policy: str = "fcfs", max_steps: int = 10_000_000, progress: bool = True):
    """Replay ``trace`` through vLLM's scheduler; returns (step rows, request rows, summary dict)."""
    v = import_vllm()
    usable = num_gpu_blocks - 1  # BlockPool keeps one null block
    for i, row in enumerate(trace):
        need = -(-(row["P"] + row["D"] - 1) // BLOCK_SIZE)
        if need > usable:
            raise InputError(
                f"request {i} needs {need} KV blocks (prompt {row['P']} + {row['D']} output tokens) but only "
                f"{usable} of --num-gpu-blocks={num_gpu_blocks} hold KV: vLLM would preempt it forever"
            )
    scheduler, vllm_config, block_hasher = make_scheduler(
        v, num_gpu_blocks, max_num_batched_tokens, max_num_seqs, enable_prefix_caching, policy
    )
    Request, SamplingParams, ModelRunnerOutput = v["Request"], v["SamplingParams"], v["ModelRunnerOutput"]
    step_time = _step_time_fn(bt)

    n = len(trace)
    req_rows = [
        {
            "id": i, "arrival_s": r["arrival_s"], "prefill_length": r["P"], "decode_length": r["D"],
            "prefix_group": r["group"], "prefix_length": r["plen"], "first_scheduled_s": math.nan,
            "first_token_s": math.nan, "finish_s": math.nan, "num_preemptions": 0,
            "cached_prompt_tokens": 0, "cached_tokens_total": 0,
        }
        for i, r in enumerate(trace)
    ]
    requests: dict[str, object] = {}
    running: set[int] = set()  # admitted, not preempted or finished since
    steps: list[dict] = []
    t = 0.0
    prev_end = None
    prev_decoding: set[int] = set()
    prev_kv = 0
    nxt = 0  # next trace row to add
    n_done = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="vLLM scheduler", unit="req", file=sys.stderr, mininterval=1.0)
    while n_done < n:
        while nxt < n and trace[nxt]["arrival_s"] <= t:
            r = trace[nxt]
            req = Request(
                request_id=f"{nxt:08d}",  # zero-padded: vLLM's priority tie-break compares ids as strings
                prompt_token_ids=prompt_token_ids(nxt, r),
                sampling_params=SamplingParams(max_tokens=r["D"], ignore_eos=True),
                pooling_params=None,
                arrival_time=r["arrival_s"],
                priority=r["priority"],
                block_hasher=block_hasher,
            )
            requests[req.request_id] = req
            scheduler.add_request(req)
            nxt += 1
        out = scheduler.schedule()
        if out.total_num_scheduled_tokens == 0:
            scheduler.update_from_output(out, ModelRunnerOutput(req_ids=[], req_id_to_index={}))
            if nxt >= n:
                raise RuntimeError(f"vLLM scheduled nothing at t={t!r} with {n - n_done} requests unfinished")
            t = max(t, trace[nxt]["arrival_s"])
            continue
        if len(steps) >= max_steps:
            raise RuntimeError(f"more than {max_steps} steps")

        preempted = [int(rid) for rid in out.preempted_req_ids]
        running.difference_update(preempted)
        admitted = [int(rid) for rid in out.num_scheduled_tokens if int(rid) not in running]
        new_ids = [i for i in admitted if math.isnan(req_rows[i]["first_scheduled_s"])]
        resumed_ids = [i for i in admitted if not math.isnan(req_rows[i]["first_scheduled_s"])]
        running.update(admitted)
        prefill_tokens = decode_tokens = kv_tokens = attn_tokens = 0
        decoding = set()
        chunks = []
        req_ids, sampled = [], []
        for rid, ntok in out.num_scheduled_tokens.items():
            req = requests[rid]
            k = req.num_computed_tokens - ntok  # computed or cached before this step
            i = int(rid)
            if ntok == 1 and k >= req.num_prompt_tokens and k == req.num_tokens - 1:
                decode_tokens += 1
                kv_tokens += k
                decoding.add(i)
            else:
                prefill_tokens += ntok
                attn_tokens += ntok * (k + ntok)
                chunks.append(f"{i}:{k}:{ntok}")
            req_ids.append(rid)
            # one sampled token when the request's computed tokens reach its known tokens
            sampled.append([0] if req.num_computed_tokens >= req.num_tokens else [])
        for i in new_ids + resumed_ids:
            rid = f"{i:08d}"
            cached = requests[rid].num_computed_tokens - out.num_scheduled_tokens[rid]
            req_rows[i]["cached_tokens_total"] += cached
            if i in new_ids:
                req_rows[i]["cached_prompt_tokens"] = cached
                req_rows[i]["first_scheduled_s"] = t
        for i in preempted:
            req_rows[i]["num_preemptions"] += 1

        dt = step_time(prefill_tokens, decode_tokens, kv_tokens, attn_tokens)
        t_end = t + dt
        mro = ModelRunnerOutput(
            req_ids=req_ids, req_id_to_index={rid: j for j, rid in enumerate(req_ids)}, sampled_token_ids=sampled
        )
        finished = []
        for rid, toks in zip(req_ids, sampled):
            if toks and math.isnan(req_rows[int(rid)]["first_token_s"]):
                req_rows[int(rid)]["first_token_s"] = t_end
        scheduler.update_from_output(out, mro)
        for rid, toks in zip(req_ids, sampled):
            req = requests[rid]
            if toks and req.is_finished():
                finished.append(int(rid))
                req_rows[int(rid)]["finish_s"] = t_end
                running.discard(int(rid))
                if req.num_output_tokens != req.max_tokens:
                    raise RuntimeError(f"request {rid} finished with {req.num_output_tokens} of {req.max_tokens} tokens")
                del requests[rid]
        n_done += len(finished)
        if bar is not None and finished:
            bar.update(len(finished))
        steps.append(
            {
                "step": len(steps), "start_s": t if prev_end is None or t != prev_end else None,
                "prefill_tokens": prefill_tokens, "decode_tokens": decode_tokens, "kv_tokens_delta": kv_tokens - prev_kv,
                "prefill_attention_tokens": attn_tokens, "num_scheduled_reqs": len(req_ids),
                "prefill_chunks": ";".join(chunks), "decode_added": _ids(decoding - prev_decoding),
                "decode_removed": _ids(prev_decoding - decoding),
                "new_ids": _ids(new_ids), "resumed_ids": _ids(resumed_ids), "preempted_ids": _ids(preempted),
                "finished_ids": _ids(finished),
            }
        )
        prev_end = t = t_end
        prev_decoding = decoding
        prev_kv = kv_tokens
    if bar is not None:
        bar.close()
    summary = {
        "vllm_version": v["vllm"].__version__,
        "num_requests": n,
        "num_steps": len(steps),
        "num_preemptions": sum(r["num_preemptions"] for r in req_rows),
        "num_preempted_requests": sum(1 for r in req_rows if r["num_preemptions"]),
        "cached_prompt_tokens": sum(r["cached_prompt_tokens"] for r in req_rows),
        "cached_tokens_total": sum(r["cached_tokens_total"] for r in req_rows),
        "prompt_tokens": sum(r["prefill_length"] for r in req_rows),
        "makespan_s": t,
        "mean_ttft_s": sum(r["first_token_s"] - r["arrival_s"] for r in req_rows) / n,
        "mean_e2e_s": sum(r["finish_s"] - r["arrival_s"] for r in req_rows) / n,
        "scheduler": scheduler_settings(vllm_config),
        "batch_time": bt.to_dict(),
    }
    return steps, req_rows, summary


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv_gz(path: Path, columns, rows) -> None:
    """Gzipped CSV (floats as ``repr``: read back bit for bit); mtime 0 so reruns are byte-identical."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        lines = [",".join(columns)] + [",".join(_fmt(r[c]) for c in columns) for r in rows]
        gz.write(("\n".join(lines) + "\n").encode())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", required=True, type=Path, help="CSV: arrival_time, prefill_length, decode_length[, prefix_group, prefix_length]")
    p.add_argument("--num-gpu-blocks", required=True, type=int, help="vLLM num_gpu_blocks (one is the null block)")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--policy", choices=("fcfs", "priority"), default="fcfs",
                   help="vLLM's scheduling policy (priority: the trace's priority column, lower first)")
    p.add_argument("--preset", type=Path, default=REPO / "calibration" / "data" / "h100_llama31_8b_preset.yaml",
                   help="BatchTimeModel preset YAML (default: the H100 Llama-3.1-8B fit)")
    p.add_argument("--output-dir", "--out-dir", dest="output_dir", required=True, type=Path)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true")
    return p


@cli_errors
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    for name in ("num_gpu_blocks", "max_num_batched_tokens", "max_num_seqs"):
        if getattr(args, name) < 1 + (name == "num_gpu_blocks"):
            raise InputError(f"--{name.replace('_', '-')} must be >= {1 + (name == 'num_gpu_blocks')}, got {getattr(args, name)}")
    trace = read_trace(args.trace)
    bt = BatchTimeModel.from_yaml(args.preset)
    wall0 = time.perf_counter()
    steps, req_rows, summary = run(
        trace, bt, args.num_gpu_blocks, args.max_num_batched_tokens, args.max_num_seqs,
        args.enable_prefix_caching, args.policy, progress=not args.no_progress,
    )
    summary["wall_s"] = time.perf_counter() - wall0
    summary["trace"] = str(args.trace)
    summary["preset"] = str(args.preset)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_csv_gz(args.output_dir / "steps.csv.gz", STEP_COLUMNS, steps)
    write_csv_gz(args.output_dir / "requests.csv.gz", REQUEST_COLUMNS, req_rows)
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"vLLM {summary['vllm_version']}: {summary['num_requests']} requests, {summary['num_steps']} steps, "
            f"{summary['num_preemptions']} preemptions, mean TTFT {summary['mean_ttft_s']:.4f} s -> {args.output_dir}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
