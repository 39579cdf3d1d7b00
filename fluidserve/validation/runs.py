"""Real serving runs: inference-perf run folders and vLLM ``benchmark_serving.py`` result JSON.

:func:`read_run` turns one run into a :class:`Run`: the vLLM server settings, the client's
workload description (per stage) and the measured metrics per stage, in seconds.

inference-perf layout (``RUN_DIR``): ``exp-config.yaml`` (vLLM settings: model,
tensor_parallelism, max_model_len, max_num_batched_tokens, max_num_seqs), ``results/config.yaml``
(the resolved client config: ``data``, ``load``, ``api``) and
``results/stage_N_lifecycle_metrics.json`` (the measured distributions). vLLM benchmark JSON:
the file written by ``benchmarks/benchmark_serving.py --save-result`` (one stage; server settings
from the command line flags, vLLM's defaults otherwise).

Metric definitions (inference-perf ``reportgen``): E2E = ``request_latency`` (end - start),
TTFT = first streamed token - start, TPOT = (last token time - first token time) / (output
tokens - 1), ITL = gaps between consecutive entries of the client's token timeline. The client's
timeline has one entry per token it counts when it re-tokenizes each streamed chunk; with a
tokenizer that prepends a BOS token per chunk (SentencePiece Llama tokenizers, inference-perf
before its fix of issue #564) that is two entries per generated token, which halves TPOT and ITL
and shows as a median ITL of microseconds. :attr:`Stage.client_tokens_per_token` records that
factor, detected from the measured ITL distribution's shape (see :func:`timeline_factor`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluidserve.errors import InputError
from fluidserve.yamlio import read_yaml

#: the metric keys of one stage, predicted and measured alike (seconds; tokens/s)
METRICS = ("e2e_mean", "e2e_p90", "e2e_p99", "ttft_mean", "ttft_p90", "ttft_p99", "tpot_mean", "itl_mean",
           "output_tokens_per_s")

#: vLLM defaults where a benchmark JSON does not say (V1 engine, online serving)
VLLM_DEFAULTS = {"tensor_parallelism": 1, "max_num_batched_tokens": 2048, "max_num_seqs": 256,
                 "max_model_len": None, "gpu_memory_utilization": 0.9}


@dataclass(frozen=True)
class SharedPrefix:
    """inference-perf ``data.type: shared_prefix``: ``num_groups`` system prompts shared by
    ``num_prompts_per_group`` prompts each; request ``i`` uses prompt ``i mod (groups * per_group)``."""

    num_groups: int
    num_prompts_per_group: int
    system_prompt_len: int
    question_len: int
    output_len: int


@dataclass
class Stage:
    """One load stage: its arrivals and what was measured."""

    index: int
    rate: float  # requests/s
    duration_s: float
    arrivals: str  # "constant" (evenly spaced) or "poisson"
    measured: dict[str, float]
    requests: int
    failures: int
    prompt_len_mean: float
    output_len_mean: float | None
    output_len_median: float | None
    client_tokens_per_token: float = 1.0
    input_lens: list[int] | None = None
    output_lens: list[int] | None = None
    burstiness: float = 1.0

    @property
    def overloaded(self) -> bool:
        """Measured overload: requests failed (at the client's timeout), or the queue grew (see
        :func:`is_overloaded`)."""
        return is_overloaded(self.failures, self.measured.get("ttft_mean", float("nan")), self.duration_s)


@dataclass
class Run:
    """A real run: the server settings, the workload, the measured stages."""

    name: str
    path: Path
    model: str
    tensor_parallel: int
    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int | None
    gpu_memory_utilization: float
    stages: list[Stage]
    shared_prefix: SharedPrefix | None = None
    kind: str = "inference-perf"
    client_timeout_s: float = 300.0
    extra: dict[str, Any] = field(default_factory=dict)


#: a stage whose mean TTFT exceeds this fraction of its duration had a growing queue
OVERLOAD_TTFT_FRACTION = 0.01


def is_overloaded(failures: int, ttft_mean_s: float, duration_s: float) -> bool:
    """A stage is overloaded when requests failed at the client's timeout or its queue grew.

    A stable server's TTFT is a few engine steps (tens of ms); when arrivals outrun it the wait
    grows through the stage and the mean TTFT becomes a sizeable fraction of the stage's duration
    (> ``OVERLOAD_TTFT_FRACTION``, 1%: 6 s of a 600 s stage), whether or not the client's timeout
    was reached. The same test marks predicted and measured stages.
    """
    if failures > 0:
        return True
    return bool(ttft_mean_s == ttft_mean_s and duration_s > 0 and ttft_mean_s > OVERLOAD_TTFT_FRACTION * duration_s)


def timeline_factor(itl: dict[str, float] | None) -> float:
    """Client timeline entries per generated token, from the shape of the measured ITL distribution.

    A real token stream has no gaps much shorter than an engine step; when the median ITL is below
    a tenth of the mean, at least half of the timeline's gaps are intra-chunk duplicates (a BOS
    token counted per chunk), i.e. two entries per token. Otherwise one.
    """
    if not itl or not itl.get("mean") or itl.get("median") is None:
        return 1.0
    return 2.0 if itl["median"] < 0.1 * itl["mean"] else 1.0


def _num(d: dict[str, Any], key: str, where: str, kind=float):
    if key not in d or d[key] is None:
        raise InputError(f"{where}: missing '{key}'")
    try:
        return kind(d[key])
    except (TypeError, ValueError):
        raise InputError(f"{where}: '{key}' must be a number, got {d[key]!r}") from None


def _measured_inference_perf(m: dict[str, Any], where: str) -> tuple[dict[str, float], dict[str, Any]]:
    succ = m.get("successes") or {}
    lat = succ.get("latency") or {}
    out: dict[str, float] = {}

    def get(metric: str, stat: str) -> float:
        block = lat.get(metric) or {}
        v = block.get(stat)
        return float(v) if v is not None else float("nan")

    for key, metric in (("e2e", "request_latency"), ("ttft", "time_to_first_token")):
        out[f"{key}_mean"] = get(metric, "mean")
        out[f"{key}_p90"] = get(metric, "p90")
        out[f"{key}_p99"] = get(metric, "p99")
    out["tpot_mean"] = get("time_per_output_token", "mean")
    out["itl_mean"] = get("inter_token_latency", "mean")
    thr = succ.get("throughput") or {}
    out["output_tokens_per_s"] = float(thr.get("output_tokens_per_sec", float("nan")) or float("nan"))
    return out, lat.get("inter_token_latency")


def read_inference_perf(run_dir: Path) -> Run:
    """Read an inference-perf run folder (see the module docstring)."""
    exp_path = run_dir / "exp-config.yaml"
    cfg_path = run_dir / "results" / "config.yaml"
    for p in (exp_path, cfg_path):
        if not p.is_file():
            raise InputError(f"{run_dir}: not an inference-perf run folder (missing {p.relative_to(run_dir)})")
    exp = read_yaml(exp_path, "exp-config")
    cfg = read_yaml(cfg_path, "inference-perf config")
    where = str(exp_path)
    data = cfg.get("data") or {}
    sp = None
    if data.get("type") == "shared_prefix":
        d = data.get("shared_prefix") or {}
        w = f"{cfg_path}: data.shared_prefix"
        sp = SharedPrefix(*(_num(d, k, w, int) for k in
                            ("num_groups", "num_prompts_per_group", "system_prompt_len", "question_len", "output_len")))
    elif data.get("type") not in (None, "random", "shared_prefix"):
        raise InputError(f"{cfg_path}: data.type '{data.get('type')}' is not supported (shared_prefix, random)")
    load = cfg.get("load") or {}
    arrivals = str(load.get("type", "constant"))
    if arrivals not in ("constant", "poisson"):
        raise InputError(f"{cfg_path}: load.type '{arrivals}' is not supported (constant, poisson)")
    stage_cfgs = load.get("stages") or []
    if not stage_cfgs:
        raise InputError(f"{cfg_path}: load.stages is empty")
    stages = []
    for i, st in enumerate(stage_cfgs):
        f = run_dir / "results" / f"stage_{i}_lifecycle_metrics.json"
        if not f.is_file():
            raise InputError(f"{run_dir}: missing results/stage_{i}_lifecycle_metrics.json")
        try:
            m = json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{f}: not valid JSON ({exc})") from None
        measured, itl = _measured_inference_perf(m, str(f))
        succ = m.get("successes") or {}
        plen = (succ.get("prompt_len") or {}).get("mean")
        olen = succ.get("output_len") or {}
        stages.append(Stage(
            index=i, rate=_num(st, "rate", f"{cfg_path}: load.stages[{i}]"),
            duration_s=_num(st, "duration", f"{cfg_path}: load.stages[{i}]"), arrivals=arrivals,
            measured=measured, requests=int(succ.get("count") or 0),
            failures=int((m.get("failures") or {}).get("count") or 0),
            prompt_len_mean=float(plen) if plen else float("nan"),
            output_len_mean=olen.get("mean"), output_len_median=olen.get("median"),
            client_tokens_per_token=timeline_factor(itl),
        ))
    timeout = load.get("request_timeout") or cfg.get("request_timeout") or 300.0
    return Run(
        name=run_dir.name, path=run_dir, model=str(exp.get("model") or (cfg.get("server") or {}).get("model_name")),
        tensor_parallel=int(exp.get("tensor_parallelism", 1)),
        max_num_batched_tokens=_num(exp, "max_num_batched_tokens", where, int) if "max_num_batched_tokens" in exp
        else VLLM_DEFAULTS["max_num_batched_tokens"],
        max_num_seqs=int(exp.get("max_num_seqs", VLLM_DEFAULTS["max_num_seqs"])),
        max_model_len=int(exp["max_model_len"]) if exp.get("max_model_len") else None,
        gpu_memory_utilization=float(exp.get("gpu_memory_utilization", 0.9)),
        stages=stages, shared_prefix=sp, client_timeout_s=float(timeout),
    )


def read_benchmark_json(path: Path, settings: dict[str, Any] | None = None) -> Run:
    """Read a vLLM ``benchmark_serving.py --save-result`` JSON (one stage).

    vLLM's definitions: TPOT = (E2E - TTFT) / (output tokens - 1) per request (server token
    counts), ITL = gaps between streamed chunks; so the client factor is 1. ``settings`` gives the
    server flags (tensor_parallelism, max_num_batched_tokens, max_num_seqs, max_model_len) that the
    JSON does not record; vLLM's defaults otherwise.
    """
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(d, dict) or "mean_ttft_ms" not in d:
        raise InputError(f"{path}: not a vLLM benchmark_serving result (no 'mean_ttft_ms')")
    s = {**VLLM_DEFAULTS, **(settings or {})}
    where = str(path)
    completed = _num(d, "completed", where, int)
    ms = 1e-3

    def pct(metric: str, p: int) -> float:
        v = d.get(f"p{p}_{metric}_ms")
        return float(v) * ms if v is not None else float("nan")

    measured = {
        "e2e_mean": _num(d, "mean_e2el_ms", where) * ms if "mean_e2el_ms" in d else float("nan"),
        "e2e_p90": pct("e2el", 90), "e2e_p99": pct("e2el", 99),
        "ttft_mean": _num(d, "mean_ttft_ms", where) * ms, "ttft_p90": pct("ttft", 90), "ttft_p99": pct("ttft", 99),
        "tpot_mean": _num(d, "mean_tpot_ms", where) * ms, "itl_mean": _num(d, "mean_itl_ms", where) * ms,
        "output_tokens_per_s": _num(d, "output_throughput", where),
    }
    rate = d.get("request_rate", "inf")
    rate = float("inf") if rate in ("inf", None) else float(rate)
    num_prompts = int(d.get("num_prompts") or completed)
    in_lens = [int(x) for x in d["input_lens"]] if d.get("input_lens") else None
    out_lens = [int(x) for x in d["output_lens"]] if d.get("output_lens") else None
    errors = d.get("errors") or []
    failures = sum(1 for e in errors if e) if errors else max(0, num_prompts - completed)
    plen = _num(d, "total_input_tokens", where) / max(completed, 1)
    olen = _num(d, "total_output_tokens", where) / max(completed, 1)
    duration = _num(d, "duration", where)
    stage = Stage(index=0, rate=rate, duration_s=duration if rate == float("inf") else num_prompts / rate,
                  arrivals="poisson", measured=measured, requests=completed, failures=failures,
                  prompt_len_mean=plen, output_len_mean=olen, output_len_median=None,
                  client_tokens_per_token=1.0, input_lens=in_lens, output_lens=out_lens,
                  burstiness=float(d.get("burstiness") or 1.0))
    return Run(
        name=path.stem, path=path, model=str(d.get("model_id") or d.get("model") or ""),
        tensor_parallel=int(s["tensor_parallelism"]), max_num_batched_tokens=int(s["max_num_batched_tokens"]),
        max_num_seqs=int(s["max_num_seqs"]), max_model_len=s["max_model_len"],
        gpu_memory_utilization=float(s["gpu_memory_utilization"]), stages=[stage], kind="vllm-benchmark",
        client_timeout_s=float("inf"), extra={"num_prompts": num_prompts},
    )


def read_run(path: str | Path, settings: dict[str, Any] | None = None) -> Run:
    """An inference-perf run folder or a vLLM benchmark JSON file."""
    p = Path(path)
    if p.is_dir():
        return read_inference_perf(p)
    if p.is_file() and p.suffix == ".json":
        return read_benchmark_json(p, settings)
    raise InputError(f"{p}: neither an inference-perf run folder nor a vLLM benchmark JSON file")
