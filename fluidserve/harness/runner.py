"""One harness experiment: start the servers, run the load phases under NVML power monitoring,
stop the servers, write the results.

Layouts and their load phases (the same workload each time, open loop, request i sent at
``(arrival_i - arrival_0) / time_scale`` wall seconds after the phase starts):

* ``single`` (traditional, one instance): phase ``prefill`` sends every request with
  ``max_tokens=1``, so its TTFT is the request's prefill latency (queueing + prefill); phase
  ``e2e`` sends them with their own ``max_tokens``: TTFT, TBT (mean time between output tokens,
  vLLM's TPOT) and E2E. The decode time of a request is its E2E minus its prefill latency.
* ``disagg`` (a prefill and a decode instance behind fluidserve/harness/proxy.py): phase
  ``e2e`` through the proxy; the client measures TTFT, TBT, E2E; the proxy adds the prefill
  latency, the decode instance's first-token latency and the KV transfer time.

All times in the results are in the servers' seconds: wall seconds for vLLM, simulated
seconds for the stand-ins (wall x ``time_scale``). Written into ``output_dir``:
``single_results.json`` or ``disaggregated_results.json`` (rewritten after every step, with
``status`` running / complete / interrupted / failed), ``{layout}_{phase}_requests.csv`` (the
client's per-request records, appended as each request ends), ``{layout}_token_gaps.csv``, ``proxy_requests.csv`` (disagg),
``{layout}_power_gpu{N}.csv`` (the NVML trace of each GPU; per phase, each GPU's mean power and
the sampled power integrated over the phase, and the energy per output token), ``workload.csv`` (the requests as
sent: arrival_time in server seconds, prefill_length, decode_length), ``{layout}_{server}.log``.

A SIGINT or SIGTERM stops the load, stops every server the run started and keeps every result
written so far (``status: interrupted``; exit code 130).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from fluidserve.errors import FluidserveError
from fluidserve.harness.processes import ManagedServer, ServerGroup, ServerSpec
from fluidserve.workload.base import Workload

RESULT_FILES = {"single": "single_results.json", "disagg": "disaggregated_results.json"}
METRIC_NAMES = ("prefill_s", "ttft_s", "tbt_s", "e2e_s", "decode_s", "kv_transfer_s", "decode_ttft_s")
_TIME_COLUMNS = ("arrival_time", "first_token_time", "completion_time", "ttft", "tpot", "total_delay", "send_time")


@dataclass
class HarnessPlan:
    """Everything one run needs (built by fluidserve/harness/cli.py)."""

    layout: str  # single | disagg
    backend: str  # vllm | sim
    output_dir: Path
    workload: Workload
    model: str  # the "model" field of each request
    servers: list[ServerSpec]  # in start order; the load goes to the last one (the proxy for disagg)
    time_scale: float = 1.0  # server seconds per wall second
    power_gpus: list[int] = field(default_factory=list)
    power_factory: Callable[[list[int]], Any] | None = None  # gpu indices -> PowerMonitor
    startup_timeout_s: float = 1200.0
    request_timeout_s: float = 600.0
    warmup_requests: int = 2  # short requests (16-token prompt, 2 tokens) sent and awaited before the phases
    meta: dict[str, Any] = field(default_factory=dict)


def summary_stats(values) -> dict[str, float | int | None]:
    """mean / p50 / p90 / p99 / n of the finite values (None when there are none)."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": None, "p50": None, "p90": None, "p99": None, "n": 0}
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99)), "n": int(len(v))}


def workload_frame(workload: Workload) -> pd.DataFrame:
    """The requests as the harness sends them (arrival_time from the first request, server seconds)."""
    a = workload.arrival_time_s - workload.arrival_time_s[0]
    return pd.DataFrame({"req_id": np.arange(len(workload)), "arrival_time": a,
                         "prefill_length": workload.prefill_tokens, "decode_length": workload.decode_tokens})


class _SigtermAsSigint:
    """While active, SIGTERM is delivered as SIGINT (KeyboardInterrupt), so one code path stops everything.

    SIGINT itself raises KeyboardInterrupt even if the process started with it ignored (a shell
    starts background jobs, ``cmd &``, with SIGINT ignored, and Python keeps that: ``kill -INT``
    and SIGTERM then did nothing, and the run went on to its end).
    """

    def __enter__(self):
        self._old_term = signal.getsignal(signal.SIGTERM)
        self._old_int = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._old_term)
        signal.signal(signal.SIGINT, self._old_int)


class HarnessRun:
    """Runs a :class:`HarnessPlan`; ``results`` is the JSON document, ``run()`` the exit code."""

    def __init__(self, plan: HarnessPlan) -> None:
        self.plan = plan
        self.out = Path(plan.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / RESULT_FILES[plan.layout]
        self.group = ServerGroup()
        self.monitor = None
        self.results: dict[str, Any] = {
            "layout": plan.layout, "backend": plan.backend, "model": plan.model, "status": "running",
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "time_scale": plan.time_scale,
            "time_unit": "server seconds (simulated seconds for the stand-ins)", "num_requests": len(plan.workload),
            "workload": plan.workload.name, "files": {"workload": "workload.csv"}, **plan.meta,
            "servers": [], "phases": {}, "metrics": {}, "power": {}, "error": None,
        }

    # ------------------------------------------------------------------ output
    def write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(finite_json(self.results), indent=2, default=_json_default, allow_nan=False) + "\n")
        os.replace(tmp, self.path)

    def _log(self, msg: str) -> None:
        print(f"harness {self.plan.layout}: {msg}", file=sys.stderr, flush=True)

    # --------------------------------------------------------------------- run
    def run(self) -> int:
        plan = self.plan
        workload_frame(plan.workload).to_csv(self.out / "workload.csv", index=False)
        rc = 0
        with _SigtermAsSigint():
            try:
                self.write()
                self._start_servers()
                if plan.power_factory is not None and plan.power_gpus:
                    self.monitor = plan.power_factory(plan.power_gpus)
                    self.monitor.start()
                self._warmup()
                phases = [("prefill", 1), ("e2e", None)] if plan.layout == "single" else [("e2e", None)]
                for name, max_tokens in phases:
                    self._run_phase(name, max_tokens)
                self.results["status"] = "complete"
            except KeyboardInterrupt:
                self.results["status"] = "interrupted"
                self._log("interrupted: stopping the servers, keeping the results so far")
                rc = 130
            except Exception as exc:
                self.results["status"] = "failed"
                self.results["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())
                self._log(f"failed: {self.results['error']}")
                rc = 1
            finally:
                self._finish()
        return rc

    def _start_servers(self) -> None:
        plan = self.plan
        for spec in plan.servers:
            server = ManagedServer(spec, self.out / f"{plan.layout}_{spec.name}.log")
            self.group.start(server)
            self._log(f"started {spec.name} (pid {server.pid}) at {spec.url}")
        self.results["servers"] = [s.describe() for s in self.group.servers]
        self.write()
        for server in self.group.servers:
            server.wait_healthy(plan.startup_timeout_s)
        self._log("all servers healthy")

    def _warmup(self) -> None:
        """Open the connections and warm every server on the path, then let the engines go idle."""
        from fluidserve.calibration.loadclient import LoadSettings, run_load

        n = self.plan.warmup_requests
        self.results["warmup_requests"] = max(n, 0)
        if n < 1:
            return
        wl = Workload(np.zeros(n), np.full(n, 16), np.full(n, 2), name="warmup")
        settings = LoadSettings(url=self.plan.servers[-1].url, model=self.plan.model, metrics_interval_s=0.0,
                                request_timeout_s=self.plan.request_timeout_s)
        load = run_load(wl, settings)
        bad = load.requests["error"].fillna("").astype(str)
        if bad.ne("").any():
            raise FluidserveError(f"warm-up request failed: {bad[bad.ne('')].iloc[0]}")

    def _run_phase(self, name: str, max_tokens: int | None) -> None:
        from fluidserve.calibration.loadclient import REQUEST_TRACE_COLUMNS, LoadSettings, run_load

        plan = self.plan
        wl = plan.workload
        if max_tokens is not None:
            wl = Workload(wl.arrival_time_s, wl.prefill_tokens, np.full(len(wl), max_tokens), name=f"{wl.name}-max{max_tokens}")
        ts = plan.time_scale
        table = self.out / f"{plan.layout}_{name}_requests.csv"
        with open(table, "w", newline="") as f:
            csv.writer(f).writerow(REQUEST_TRACE_COLUMNS)

        def keep(record: dict[str, Any], _times) -> None:
            row = {k: (record[k] * ts if k in _TIME_COLUMNS else record[k]) for k in REQUEST_TRACE_COLUMNS}
            with open(table, "a", newline="") as fh:
                csv.writer(fh).writerow([("" if isinstance(v, float) and math.isnan(v) else v) for v in row.values()])

        settings = LoadSettings(url=plan.servers[-1].url, model=plan.model, time_scale=1.0 / ts,
                                metrics_interval_s=0.0, request_timeout_s=plan.request_timeout_s)
        t_start = self.monitor.elapsed_s() if self.monitor is not None else None
        self.results["phases"][name] = {"status": "running", "max_tokens": max_tokens, "requests": table.name}
        self.write()
        self._log(f"phase {name}: {len(wl)} requests")
        load = run_load(wl, settings, progress=sys.stderr.isatty(), on_request=keep)
        gaps = load.token_gaps.copy()
        gaps[["time", "gap_s"]] = gaps[["time", "gap_s"]] * ts
        gaps.to_csv(self.out / f"{plan.layout}_{name}_token_gaps.csv", index=False)
        req = pd.read_csv(table)
        phase = {
            "status": "complete", "max_tokens": max_tokens, "requests": table.name,
            "token_gaps": f"{plan.layout}_{name}_token_gaps.csv",
            "completed": int(req["completion_time"].notna().sum()), "errors": int(req["error"].fillna("").astype(str).ne("").sum()),
            "wall_s": load.summary.get("wall_s"),
            "send_lag_s_max": load.summary.get("send_lag_s_max"),
        }
        if self.monitor is not None:
            phase["power_window_s"] = [t_start, self.monitor.elapsed_s()]
        self.results["phases"][name] = phase
        self._metrics()
        self.write()

    # ------------------------------------------------------------------ finish
    def _finish(self) -> None:
        """Stop monitoring and every server, write what was measured; a second Ctrl-C waits for this."""
        old_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._finish_unguarded()
        finally:
            signal.signal(signal.SIGINT, old_sigint)

    def _finish_unguarded(self) -> None:
        with contextlib.suppress(Exception):
            if self.monitor is not None:
                self.monitor.stop()
        t0 = time.monotonic()
        codes = self.group.stop_all()
        for server in self.results["servers"]:
            server["exit_code"] = codes.get(server["name"])
        self._log(f"servers stopped in {time.monotonic() - t0:.1f} s: {codes}")
        if self.monitor is not None:
            self._write_power()
            with contextlib.suppress(Exception):
                self.monitor.close()
        proxy_csv = self.out / "proxy_requests.csv"
        if proxy_csv.exists():
            self.results["files"]["proxy_requests"] = proxy_csv.name
        for name, phase in self.results["phases"].items():
            if phase.get("status") == "running":
                phase["status"] = self.results["status"]
        with contextlib.suppress(Exception):
            self._metrics()
        self.results["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.write()

    def _write_power(self) -> None:
        samples = self.monitor.samples
        names = {s.gpu: s.name for s in self.plan.servers if s.gpu is not None}
        for gpu in self.plan.power_gpus:
            trace = samples[samples["gpu"] == gpu]
            path = self.out / f"{self.plan.layout}_power_gpu{gpu}.csv"
            trace.to_csv(path, index=False)
            self.results["power"][str(gpu)] = {
                "role": names.get(gpu), "trace": path.name,
                "avg_power_w": self.monitor.avg_power_w_per_gpu.get(gpu),
                "energy_j": self.monitor.energy_j_per_gpu.get(gpu),
                "samples": int(len(trace)), "energy_source": self.monitor.energy_source,
            }
        self.results["power_duration_s"] = self.monitor.duration_s
        for name, phase in self.results["phases"].items():
            win = phase.get("power_window_s")
            if not win or None in win:
                continue
            per_gpu = {}
            for gpu in self.plan.power_gpus:
                w = samples[(samples["gpu"] == gpu) & (samples["time_s"] >= win[0]) & (samples["time_s"] <= win[1])]
                w = w[np.isfinite(w["power_w"])]
                pw, tw = w["power_w"].to_numpy(), w["time_s"].to_numpy()
                energy = float(np.sum(np.diff(tw) * (pw[1:] + pw[:-1]) / 2)) if len(w) > 1 else None  # trapezoid
                per_gpu[str(gpu)] = {"avg_power_w": float(w["power_w"].mean()) if len(w) else None, "energy_j": energy}
            phase["power"] = per_gpu
            table = self.out / phase["requests"]
            tokens = int(pd.read_csv(table)["tokens_received"].sum()) if table.exists() else 0
            energies = [g["energy_j"] for g in per_gpu.values()]
            if tokens and None not in energies:
                phase["energy_per_output_token_j"] = sum(energies) / tokens  # sampled power integrated over the phase

    def _metrics(self) -> None:
        """Summary statistics of every metric measured so far (server seconds)."""
        m: dict[str, Any] = {}
        layout = self.plan.layout
        e2e_path = self.out / f"{layout}_e2e_requests.csv"
        e2e = pd.read_csv(e2e_path) if e2e_path.exists() else None
        if layout == "single":
            pre_path = self.out / "single_prefill_requests.csv"
            pre = pd.read_csv(pre_path) if pre_path.exists() else None
            if pre is not None and len(pre):
                m["prefill_s"] = summary_stats(pre["ttft"])
            if e2e is not None and len(e2e):
                m.update(ttft_s=summary_stats(e2e["ttft"]), tbt_s=summary_stats(e2e["tpot"]), e2e_s=summary_stats(e2e["total_delay"]))
                if pre is not None and len(pre):
                    joined = e2e.set_index("req_id")["total_delay"] - pre.set_index("req_id")["ttft"]
                    m["decode_s"] = summary_stats(joined)
        else:
            if e2e is not None and len(e2e):
                m.update(ttft_s=summary_stats(e2e["ttft"]), tbt_s=summary_stats(e2e["tpot"]), e2e_s=summary_stats(e2e["total_delay"]))
            proxy = proxy_table(self.out, self.plan.time_scale, self.results.get("warmup_requests", 0))
            if proxy is not None and len(proxy):
                m["prefill_s"] = summary_stats(proxy["prefill_s"])
                m["kv_transfer_s"] = summary_stats(proxy["kv_transfer_s"])
                m["decode_ttft_s"] = summary_stats(proxy["decode_ttft_s"])
                m["proxy"] = {k: summary_stats(proxy[k]) for k in ("ttft_s", "tbt_s", "e2e_s")}
                self.results["kv_transfer_source"] = "server" if proxy["kv_transfer_reported_s"].notna().all() else "estimate"
        self.results["metrics"] = m


def proxy_table(out: Path, time_scale: float, warmup_requests: int = 0) -> pd.DataFrame | None:
    """The proxy's records of the measured requests (the first ``warmup_requests`` it received are
    dropped) in server seconds, with ``kv_transfer_s``: the transfer time the prefill instance
    reports, else the estimate ``decode_ttft_s - tbt_s`` (the decode instance's first-token latency
    less one decode step)."""
    path = Path(out) / "proxy_requests.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path)
    df = df[df["req_id"] >= warmup_requests].sort_values("req_id").reset_index(drop=True)
    for col in ("arrival_s", "prefill_s", "decode_ttft_s", "ttft_s", "tbt_s", "e2e_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce") * time_scale
    reported = pd.to_numeric(df["kv_transfer_reported_s"], errors="coerce")
    df["kv_transfer_reported_s"] = reported
    df["kv_transfer_s"] = reported.where(reported.notna(), df["decode_ttft_s"] - df["tbt_s"].fillna(0.0))
    return df


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def finite_json(obj):
    """Non-finite floats -> None (strict JSON)."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj
