"""``python -m fluidserve harness``: real-engine experiments, single instance vs disaggregated pair.

    python -m fluidserve harness vllm single --model M --gpu 0 --config CFG --output-dir DIR
    python -m fluidserve harness vllm disagg --model M --prefill-gpu 0 --decode-gpu 1 --config CFG --output-dir DIR
    python -m fluidserve harness sim single|disagg --config CFG --output-dir DIR [--time-scale 0.5]
    python -m fluidserve harness report DIR [DIR ...] [--output-dir OUT] [--json]

``vllm`` starts real vLLM servers (fluidserve/harness/commands.py has the flags and the vLLM
versions supported; ``--dry-run`` prints the command lines and starts nothing); ``sim`` starts
fluidserve's simulated stand-ins (``fluidserve serve --role ...``) with the config's system and
batch-time model, which is how CI runs the harness without a GPU. The workload is the config's
(``--requests FILE.csv`` for a trace instead; ``--num-requests N`` keeps the first N). Every GPU
used is sampled by NVML's PowerMonitor every ``--power-period-s`` (``--no-power`` to skip).
What is measured and written: fluidserve/harness/runner.py; the report: fluidserve/harness/report.py.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np

from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="backend", required=True, metavar="{vllm,sim,report}")
    for backend, help_ in (("vllm", "run real vLLM servers"), ("sim", "run fluidserve's simulated stand-in servers")):
        bp = sub.add_parser(backend, help=help_, description=help_)
        layouts = bp.add_subparsers(dest="layout", required=True, metavar="{single,disagg}")
        for layout in ("single", "disagg"):
            lp = layouts.add_parser(layout, help=f"{layout} layout")
            _common(lp, backend, layout)
    rp = sub.add_parser("report", help="figures, Markdown summary and the simulator's prediction for result folders")
    rp.add_argument("dirs", nargs="+", metavar="DIR", help="folders with single_results.json / disaggregated_results.json")
    rp.add_argument("--output-dir", default=None, help="where the report goes (default: DIR/report of the first DIR)")
    rp.add_argument("--config", default=None, help="config for the prediction (default: each run's config.yaml)")
    rp.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _common(p: argparse.ArgumentParser, backend: str, layout: str) -> None:
    p.add_argument("--output-dir", required=True, help="results folder")
    p.add_argument("--config", required=backend == "sim",
                   help="fluidserve config: workload, and the system / batch-time model of the prediction"
                        + (" and of the stand-ins" if backend == "sim" else " (its B, max_num_seqs, block_size go to vLLM)"))
    p.add_argument("--requests", default=None, help="trace CSV to send instead of the config's workload")
    p.add_argument("--num-requests", type=int, default=None, help="send only the first N requests")
    p.add_argument("--model", required=backend == "vllm", default=None,
                   help="model to serve (vLLM) / served model name (stand-ins; default the config's)")
    if layout == "single":
        p.add_argument("--gpu", type=int, default=0, help="GPU of the instance (CUDA / NVML index)")
    else:
        p.add_argument("--prefill-gpu", type=int, default=0, help="GPU of the prefill instance")
        p.add_argument("--decode-gpu", type=int, default=1, help="GPU of the decode instance")
    p.add_argument("--power-period-s", type=float, default=0.1, help="NVML sampling period (default 0.1 s)")
    p.add_argument("--no-power", action="store_true", help="do not sample GPU power")
    p.add_argument("--nvml-module", default=None,
                   help="NVML stand-in as FILE.py:FACTORY or MODULE:FACTORY returning a pynvml-like module (testing)")
    p.add_argument("--startup-timeout-s", type=float, default=1200.0 if backend == "vllm" else 120.0)
    p.add_argument("--request-timeout-s", type=float, default=600.0)
    p.add_argument("--warmup-requests", type=int, default=2, help="short requests sent before the measured phases")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    if backend == "sim":
        p.add_argument("--time-scale", type=float, default=0.1,
                       help="stand-ins' simulated seconds per wall second (default 0.1: the harness's own HTTP "
                            "overheads, a few wall ms, stay small beside the simulated latencies)")
        if layout == "disagg":
            p.add_argument("--kv-link-GBps", type=float, default=25.0, help="modeled KV link of the prefill stand-in, GB/s")
    else:
        if layout == "disagg":
            p.add_argument("--connector", default="p2p-nccl", choices=["p2p-nccl", "nixl"], help="vLLM KV connector")
            p.add_argument("--kv-link-GBps", type=float, default=25.0,
                           help="KV link speed the report's prediction assumes, GB/s (e.g. the GPUs' P2P bandwidth)")
        p.add_argument("--dtype", default="auto")
        p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
        p.add_argument("--max-model-len", type=int, default=None, help="default: longest request + 16 tokens")
        p.add_argument("--enforce-eager", action="store_true")
        p.add_argument("--vllm-arg", action="append", default=[], help="extra vLLM flag (repeat; e.g. --vllm-arg=--trust-remote-code)")
        p.add_argument("--vllm-version", default=None, help="build the command lines for this vLLM version (with --dry-run)")
        p.add_argument("--dry-run", action="store_true", help="print the server command lines as JSON, start nothing")


def load_nvml_factory(spec: str | None):
    """``FILE.py:FACTORY`` / ``MODULE:FACTORY`` -> a PowerMonitor factory (gpu list -> monitor)."""
    from fluidserve.calibration.power import PowerMonitor

    nvml = None
    if spec:
        target, _, attr = spec.partition(":")
        if not attr:
            raise InputError(f"--nvml-module must be FILE.py:FACTORY or MODULE:FACTORY, got '{spec}'")
        if target.endswith(".py"):
            if not Path(target).is_file():
                raise InputError(f"--nvml-module: no file {target}")
            loader = importlib.util.spec_from_file_location("fluidserve_nvml_standin", target)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        if not hasattr(module, attr):
            raise InputError(f"--nvml-module: {target} has no '{attr}'")
        nvml = getattr(module, attr)()

    def factory(gpus, period_s):
        return PowerMonitor(gpus, period_s=period_s, nvml=nvml)

    return factory


def _workload(args, cfg):
    from fluidserve.workload import make_workload
    from fluidserve.workload.traces import read_requests_csv

    if args.requests:
        wl = read_requests_csv(args.requests)
    elif cfg is not None:
        wl = make_workload(cfg)
    else:
        raise InputError("give --config (its workload) or --requests FILE.csv")
    if args.num_requests is not None:
        if args.num_requests < 1:
            raise InputError(f"--num-requests must be >= 1, got {args.num_requests}")
        wl = wl.subset(np.arange(len(wl)) < args.num_requests)
    return wl


def _plan(args):
    from fluidserve.config import load_config
    from fluidserve.harness import commands as C
    from fluidserve.harness.processes import free_port
    from fluidserve.harness.runner import HarnessPlan

    version = None
    if args.backend == "vllm":  # first: without vLLM nothing else matters
        version = args.vllm_version or C.installed_vllm_version()
        C.check_vllm_version(version)
    cfg = load_config(args.config) if args.config else None
    wl = _workload(args, cfg)
    out = Path(args.output_dir)
    gpus = [args.gpu] if args.layout == "single" else [args.prefill_gpu, args.decode_gpu]
    if min(gpus) < 0:
        raise InputError(f"GPU indices must be >= 0, got {gpus}")
    if args.layout == "disagg" and args.backend == "vllm" and args.prefill_gpu == args.decode_gpu:
        raise InputError(f"--prefill-gpu and --decode-gpu are both {args.prefill_gpu}; give two GPUs")
    if not args.power_period_s > 0:
        raise InputError(f"--power-period-s must be > 0, got {args.power_period_s}")
    if args.warmup_requests < 0:
        raise InputError(f"--warmup-requests must be >= 0, got {args.warmup_requests}")
    meta = {"gpus": gpus, "config": "config.yaml" if cfg is not None else None}
    if args.backend == "sim":
        model = args.model or cfg.system.model or "fluidserve-sim"
        if cfg.cluster.replicas != 1:
            raise InputError(f"{args.config}: cluster.replicas is {cfg.cluster.replicas}; each stand-in is one replica")
        if not (np.isfinite(args.time_scale) and args.time_scale > 0):
            raise InputError(f"--time-scale must be a finite number > 0, got {args.time_scale}")
        cfg_path = Path(args.config).resolve()  # a copy goes to DIR/config.yaml for the report
        time_scale = args.time_scale
        if args.layout == "single":
            servers = [C.standin_server(cfg_path, "single", free_port(), time_scale, model, gpu=args.gpu)]
        else:
            if not args.kv_link_GBps > 0:
                raise InputError(f"--kv-link-GBps must be > 0, got {args.kv_link_GBps}")
            pre = C.standin_server(cfg_path, "prefill", free_port(), time_scale, model, args.kv_link_GBps, gpu=args.prefill_gpu)
            dec = C.standin_server(cfg_path, "decode", free_port(), time_scale, model, gpu=args.decode_gpu)
            servers = [pre, dec, C.proxy_server(pre, dec, free_port(), "nixl", str(out))]
            meta.update(kv_link_GBps=args.kv_link_GBps, connector="fluidserve stand-in (NixlConnector-style kv_transfer_params)")
    else:
        model = args.model
        time_scale = 1.0
        max_len = args.max_model_len or int((wl.prefill_tokens + wl.decode_tokens).max()) + 16
        sysc = cfg.system if cfg is not None else None
        opts = C.VllmOptions(
            model=args.model, dtype=args.dtype, gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=max_len, max_num_seqs=sysc.max_num_seqs if sysc else None,
            max_num_batched_tokens=sysc.B if sysc else None, block_size=sysc.block_size if sysc else None,
            enforce_eager=args.enforce_eager, extra_args=tuple(args.vllm_arg),
        )
        meta["vllm_version"] = version
        if args.layout == "single":
            servers = [C.vllm_server(opts, "single", args.gpu, free_port())]
        else:
            discovery_port = free_port()  # P2pNcclConnector's proxy registration port: nobody listens
            pk, dk = free_port(), free_port()
            pre = C.vllm_server(opts, "prefill", args.prefill_gpu, free_port(), args.connector, pk, discovery_port)
            dec = C.vllm_server(opts, "decode", args.decode_gpu, free_port(), args.connector, dk, discovery_port)
            servers = [pre, dec, C.proxy_server(pre, dec, free_port(), args.connector, str(out), pk, dk)]
            meta.update(connector=args.connector, kv_link_GBps=args.kv_link_GBps)
    factory = None
    if not args.no_power:
        base = load_nvml_factory(args.nvml_module)

        def factory(g, _base=base, _p=args.power_period_s):
            return _base(g, _p)
    plan = HarnessPlan(layout=args.layout, backend=args.backend, output_dir=out, workload=wl, model=model,
                       servers=servers, time_scale=time_scale, power_gpus=list(dict.fromkeys(gpus)), power_factory=factory,
                       startup_timeout_s=args.startup_timeout_s, request_timeout_s=args.request_timeout_s,
                       warmup_requests=args.warmup_requests, meta=meta)
    return plan, cfg


@cli_errors
def main(args: argparse.Namespace) -> int:
    if args.backend == "report":
        from fluidserve.harness.report import build_report

        rep = build_report(args.dirs, args.output_dir, args.config)
        if args.json:
            print(to_json(rep))
        else:
            print(f"wrote {rep['files']['markdown']}", file=sys.stderr)
        return 0
    from fluidserve.harness.runner import HarnessRun

    if getattr(args, "dry_run", False):
        plan, _ = _plan(args)
        print(to_json({"layout": plan.layout, "servers": [s.describe() for s in plan.servers]}))
        return 0
    plan, cfg = _plan(args)
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    if cfg is not None:
        shutil.copyfile(args.config, plan.output_dir / "config.yaml")
    if plan.power_factory is not None:  # fail before starting any server when NVML is missing
        plan.power_factory(plan.power_gpus).close()
    run = HarnessRun(plan)
    rc = run.run()
    if args.json:
        print(to_json(run.results))
    return rc
