"""Record the golden runs of vLLM's V1 scheduler that ``tests/sim/test_vllm_conformance.py`` replays.

Builds each scenario's trace (from the shipped Azure conversation trace or a seeded synthetic
shared-prefix workload), runs ``calibration/vllm_scheduler_reference.py`` on it with the vLLM
venv's Python, and writes, per scenario, ``tests/sim/golden/<name>/{trace,steps,requests}.csv.gz``
plus one ``tests/sim/golden/manifest.json`` (settings, vLLM version, summary numbers).

Run it from the repository root with the project venv (it needs pandas, vLLM does not)::

    . /work/venv/bin/activate
    PYTHONPATH=. python calibration/record_vllm_golden.py --vllm-python /work/vllm-venv/bin/python \\
        [--scenarios a_light_pc,b_overload] [--output-dir tests/sim/golden] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fluidserve.errors import InputError, cli_errors  # noqa: E402
from fluidserve.workload.traces import AZURE_CONV_SAMPLE, load_azure  # noqa: E402

PRESET = "calibration/data/h100_llama31_8b_preset.yaml"


def azure(n: int, rate_scale: float = 1.0, max_prefill: int | None = None, max_decode: int | None = None) -> dict:
    """The first ``n`` Azure conversation requests, arrivals divided by ``rate_scale``, lengths capped."""
    w = load_azure(AZURE_CONV_SAMPLE, max_requests=n, rate_scale=rate_scale)
    p = w.prefill_tokens.astype(np.int64)
    d = w.decode_tokens.astype(np.int64)
    if max_prefill is not None:
        p = np.minimum(p, max_prefill)
    if max_decode is not None:
        d = np.minimum(d, max_decode)
    return {"arrival_time": w.arrival_time_s, "prefill_length": p, "decode_length": d}


def shared_prefix(n: int, rate: float, num_groups: int, system_prompt_len: int, question_len: tuple[int, int],
                  decode_len: tuple[int, int], seed: int) -> dict:
    """Poisson arrivals; request i uses system prompt ``g`` (uniform over groups) then a private question.

    Prompt = ``system_prompt_len`` shared tokens + a question of uniform length in ``question_len``;
    output length uniform in ``decode_len`` (bounds inclusive).
    """
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    t -= t[0]
    g = rng.integers(0, num_groups, n)
    q = rng.integers(question_len[0], question_len[1] + 1, n)
    d = rng.integers(decode_len[0], decode_len[1] + 1, n)
    return {
        "arrival_time": t, "prefill_length": system_prompt_len + q, "decode_length": d,
        "prefix_group": g, "prefix_length": np.full(n, system_prompt_len),
    }


def with_priority(cols: dict, levels: int, seed: int) -> dict:
    """``cols`` plus a uniform random ``priority`` column in 0 .. levels - 1 (lower is served first)."""
    rng = np.random.default_rng(seed)
    return {**cols, "priority": rng.integers(0, levels, len(cols["arrival_time"]))}


SCENARIOS = {
    "a_light_pc": {
        "what": "light load: first 2,000 Azure conversation requests, H100-sized KV cache, prefix caching on (vLLM default)",
        "trace": lambda: azure(2000, max_decode=400),
        "num_gpu_blocks": 8192, "max_num_batched_tokens": 2048, "max_num_seqs": 256, "enable_prefix_caching": True,
    },
    "a_light_nopc": {
        "what": "the same light load with prefix caching off",
        "trace": lambda: azure(2000, max_decode=400),
        "num_gpu_blocks": 8192, "max_num_batched_tokens": 2048, "max_num_seqs": 256, "enable_prefix_caching": False,
    },
    "b_overload": {
        "what": "overload: 600 Azure requests at 6x the rate on 1,000 KV blocks: many recompute preemptions; prefix caching off",
        "trace": lambda: azure(600, rate_scale=6.0, max_prefill=2048, max_decode=400),
        "num_gpu_blocks": 1000, "max_num_batched_tokens": 2048, "max_num_seqs": 256, "enable_prefix_caching": False,
    },
    "b_overload_pc": {
        "what": "the same overload with prefix caching on: resumed requests hit their own freed, still cached blocks",
        "trace": lambda: azure(600, rate_scale=6.0, max_prefill=2048, max_decode=400),
        "num_gpu_blocks": 1000, "max_num_batched_tokens": 2048, "max_num_seqs": 256, "enable_prefix_caching": True,
    },
    "c_chunked": {
        "what": "chunked prefill: 500 Azure requests at 2x the rate with max_num_batched_tokens=256, prefix caching on",
        "trace": lambda: azure(500, rate_scale=2.0, max_decode=300),
        "num_gpu_blocks": 8192, "max_num_batched_tokens": 256, "max_num_seqs": 256, "enable_prefix_caching": True,
    },
    "d_prefix": {
        "what": "shared system prompts: 800 requests, 4 groups of a 500-token system prompt + 20-300 private tokens, "
                "8 req/s, 1,200 KV blocks (cached blocks get evicted), prefix caching on",
        "trace": lambda: shared_prefix(800, 8.0, 4, 500, (20, 300), (20, 200), seed=11),
        "num_gpu_blocks": 1200, "max_num_batched_tokens": 2048, "max_num_seqs": 64, "enable_prefix_caching": True,
    },
    "e_mixed": {
        "what": "everything at once: 600 shared-prefix requests (8 system prompts of 300 tokens + 50-1,500 private), "
                "20 req/s on 700 KV blocks with max_num_batched_tokens=512: chunked prefills, prefix hits and evictions, "
                "recompute preemptions (also of requests in chunked prefill)",
        "trace": lambda: shared_prefix(600, 20.0, 8, 300, (50, 1500), (20, 300), seed=12),
        "num_gpu_blocks": 700, "max_num_batched_tokens": 512, "max_num_seqs": 128, "enable_prefix_caching": True,
    },
    "f_priority": {
        "what": "priority scheduling: 400 Azure requests at 6x the rate with priorities 0-2 on 1,000 KV blocks, "
                "policy=priority (victim: the largest (priority, arrival)), prefix caching off",
        "trace": lambda: with_priority(azure(400, rate_scale=6.0, max_prefill=2048, max_decode=400), 3, seed=13),
        "num_gpu_blocks": 1000, "max_num_batched_tokens": 2048, "max_num_seqs": 256, "enable_prefix_caching": False,
        "policy": "priority",
    },
}
"""The recorded scenarios: a trace builder and vLLM's scheduler settings (block size 16)."""


def write_trace(path: Path, cols: dict) -> None:
    """Gzipped generic trace CSV; arrival times as ``repr`` (exact), mtime 0 (byte-identical reruns)."""
    names = list(cols)
    n = len(cols["arrival_time"])
    lines = [",".join(names)]
    for i in range(n):
        lines.append(",".join(repr(float(cols[c][i])) if c == "arrival_time" else str(int(cols[c][i])) for c in names))
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(("\n".join(lines) + "\n").encode())


@cli_errors
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-python", default="/work/vllm-venv/bin/python", help="Python of the venv with vllm")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    ap.add_argument("--output-dir", type=Path, default=REPO / "tests" / "sim" / "golden")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    for s in names:
        if s not in SCENARIOS:
            raise InputError(f"--scenarios: unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = args.output_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"scenarios": {}}
    for name in names:
        sc = SCENARIOS[name]
        out = args.output_dir / name
        out.mkdir(parents=True, exist_ok=True)
        write_trace(out / "trace.csv.gz", sc["trace"]())
        cmd = [
            args.vllm_python, str(REPO / "calibration" / "vllm_scheduler_reference.py"),
            "--trace", str(out / "trace.csv.gz"), "--num-gpu-blocks", str(sc["num_gpu_blocks"]),
            "--max-num-batched-tokens", str(sc["max_num_batched_tokens"]), "--max-num-seqs", str(sc["max_num_seqs"]),
            "--enable-prefix-caching" if sc["enable_prefix_caching"] else "--no-enable-prefix-caching",
            "--policy", sc.get("policy", "fcfs"), "--preset", str(REPO / PRESET), "--output-dir", str(out), "--json", "--no-progress",
        ]
        print(f"recording {name} ...", file=sys.stderr)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                                                       "PYTHONHASHSEED": "0"})
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            raise InputError(f"scenario {name}: the reference run failed (exit {proc.returncode})")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        (out / "summary.json").unlink(missing_ok=True)
        for key in ("trace", "preset", "wall_s"):
            summary.pop(key, None)
        summary.update(
            what=sc["what"], preset=PRESET, files=["trace.csv.gz", "steps.csv.gz", "requests.csv.gz"],
            bytes={f.name: f.stat().st_size for f in sorted(out.glob("*.csv.gz"))},
        )
        manifest["scenarios"][name] = summary
        manifest["vllm_version"] = summary["vllm_version"]
        print(f"  {name}: {summary['num_steps']} steps, {summary['num_preemptions']} preemptions, "
              f"{summary['cached_prompt_tokens']} cached prompt tokens, {time.perf_counter() - t0:.0f} s, "
              f"{sum(summary['bytes'].values()) / 1024:.0f} kB", file=sys.stderr)
    manifest["recorded_with"] = "calibration/record_vllm_golden.py (see calibration/README.md)"
    manifest["scenarios"] = dict(sorted(manifest["scenarios"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(manifest, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
