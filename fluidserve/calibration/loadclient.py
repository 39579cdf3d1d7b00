"""Open-loop load client for an OpenAI-compatible completions endpoint (such as ``vllm serve``).

Requests come from any fluidserve Workload: request i is sent at
``(arrival_time_s[i] - arrival_time_s[0]) * time_scale`` seconds after the start, whether or
not earlier requests finished (open loop). Each is ``POST /v1/completions`` with
``stream: true``, ``max_tokens`` = its decode tokens, ``ignore_eos: true`` (vLLM's extension,
so the server generates exactly that many tokens; turn it off for servers that reject unknown
fields) and ``stream_options.include_usage`` (the server's own token count).

Prompt construction (``prompt_mode``):

* ``tokens`` (default): the prompt is a list of exactly ``prefill_tokens`` token ids, which
  the OpenAI completions API and vLLM accept. Ids are drawn uniformly from
  [token_id_low, token_id_high) by a generator seeded with the request id, so prompts differ
  from their first token on and a prefix cache cannot shortcut the prefill.
* ``text``: space-separated common English words, one word per prompt token, in a random
  order seeded by the request id. For BPE tokenizers each such word is about one token, so
  the prompt length is approximate (check the server's prompt token counts).

Recorded per request (times in seconds from the start of the run): ``arrival_time``
(scheduled), ``send_time``, ``first_token_time`` (first streamed chunk with text),
``completion_time`` (end of stream), ``ttft`` = first_token_time - arrival_time, ``tpot`` =
(completion - first token) / (tokens - 1), ``total_delay`` = completion - arrival,
``tokens_received`` (usage.completion_tokens when sent, else text chunks) and ``error``.
These follow the simulator's request_traces columns (fluidserve/sim/result.py) where they
apply. Every streamed chunk's time and gap to the previous chunk go to the token-gaps table.
While the run lasts, ``/metrics`` (Prometheus text) is scraped every ``metrics_interval_s``
when the server has it; an optional PowerMonitor samples GPUs alongside.

Command: ``python -m fluidserve calibrate load --url http://127.0.0.1:8000 --requests FILE.csv
--model NAME --output-dir DIR [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fluidserve.errors import InputError, cli_errors, require
from fluidserve.jsonout import to_json
from fluidserve.workload.base import Workload

REQUEST_TRACE_COLUMNS = [
    "req_id", "arrival_time", "prefill_length", "decode_length", "first_token_time", "completion_time",
    "ttft", "tpot", "total_delay", "send_time", "tokens_received", "http_status", "error",
]
TOKEN_GAP_COLUMNS = ["req_id", "token_index", "time", "gap_s"]
METRIC_COLUMNS = ["time", "name", "labels", "value"]

_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part"
).split()


@dataclass(frozen=True)
class LoadSettings:
    """How to drive the endpoint.

    Attributes:
        url: server base URL, e.g. ``http://127.0.0.1:8000``.
        model: the ``model`` field of each request.
        time_scale: multiplies inter-arrival times (0.5 = twice the rate).
        prompt_mode: ``tokens`` (exact token-id prompts) or ``text`` (approximate).
        ignore_eos: send ``ignore_eos: true`` so exactly max_tokens tokens are generated.
        request_timeout_s: per-request read timeout in seconds.
        metrics_interval_s: ``/metrics`` scrape period in seconds (0 disables).
        token_id_low, token_id_high: range of prompt token ids in ``tokens`` mode.
        api_key: sent as a Bearer token when given.
    """

    url: str
    model: str
    time_scale: float = 1.0
    prompt_mode: str = "tokens"
    ignore_eos: bool = True
    request_timeout_s: float = 600.0
    metrics_interval_s: float = 1.0
    token_id_low: int = 1000
    token_id_high: int = 30000
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise InputError(f"--url must start with http:// or https://, got '{self.url}'")
        if not self.model:
            raise InputError("--model is required (the model name the server serves)")
        if not (self.time_scale > 0):
            raise InputError(f"--time-scale must be > 0, got {self.time_scale}")
        if self.prompt_mode not in ("tokens", "text"):
            raise InputError(f"--prompt-mode must be 'tokens' or 'text', got '{self.prompt_mode}'")
        if not 0 <= self.token_id_low < self.token_id_high:
            raise InputError(f"token id range [{self.token_id_low}, {self.token_id_high}) is empty")
        if self.metrics_interval_s < 0 or self.request_timeout_s <= 0:
            raise InputError("--metrics-interval-s must be >= 0 and --timeout-s > 0")


@dataclass
class LoadResult:
    """Tables of one load run (times in seconds from its start) and its summary."""

    requests: pd.DataFrame
    token_gaps: pd.DataFrame
    metrics: pd.DataFrame
    summary: dict[str, Any]
    power: Any = None
    files: dict[str, str] = field(default_factory=dict)

    def write(self, output_dir: str | Path) -> dict[str, str]:
        """Write requests.csv, token_gaps.csv, metrics.csv (if scraped), power.csv (if
        metered) and summary.json into ``output_dir``; returns {table: path}."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {"requests": out / "requests.csv", "token_gaps": out / "token_gaps.csv"}
        self.requests.to_csv(files["requests"], index=False)
        self.token_gaps.to_csv(files["token_gaps"], index=False)
        if len(self.metrics):
            files["metrics"] = out / "metrics.csv"
            self.metrics.to_csv(files["metrics"], index=False)
        if self.power is not None:
            files["power"] = self.power.to_csv(out / "power.csv")
        files["summary"] = out / "summary.json"
        self.files = {k: str(v) for k, v in files.items()}
        self.summary["files"] = self.files
        files["summary"].write_text(json.dumps(self.summary, indent=2, default=_json_default) + "\n")
        return self.files


def make_prompt(req_id: int, prefill_tokens: int, settings: LoadSettings) -> list[int] | str:
    """The prompt of request ``req_id`` (see the module docstring)."""
    rng = np.random.default_rng(req_id)
    if settings.prompt_mode == "tokens":
        return rng.integers(settings.token_id_low, settings.token_id_high, size=prefill_tokens).tolist()
    return " ".join(_WORDS[i] for i in rng.integers(0, len(_WORDS), size=prefill_tokens))


def request_body(req_id: int, prefill_tokens: int, decode_tokens: int, settings: LoadSettings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": settings.model,
        "prompt": make_prompt(req_id, prefill_tokens, settings),
        "max_tokens": int(decode_tokens),
        "stream": True,
        "temperature": 0.0,
        "stream_options": {"include_usage": True},
    }
    if settings.ignore_eos:
        body["ignore_eos"] = True
    return body


async def _one_request(client, settings: LoadSettings, req_id: int, arrival: float, prefill: int, decode: int,
                       t0: float) -> tuple[dict[str, Any], list[float]]:
    body = request_body(req_id, prefill, decode, settings)
    chunk_times: list[float] = []
    usage_tokens = None
    status, error = None, ""
    send = time.perf_counter() - t0
    try:
        async with client.stream("POST", settings.url.rstrip("/") + "/v1/completions", json=body) as resp:
            status = resp.status_code
            if status != 200:
                text = (await resp.aread()).decode(errors="replace")
                error = f"HTTP {status}: {' '.join(text.split())[:300]}"
            else:
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    now = time.perf_counter() - t0
                    try:
                        obj = json.loads(data)
                    except json.JSONDecodeError:
                        error = f"bad SSE data: {data[:100]}"
                        break
                    if "error" in obj:
                        error = f"server error: {json.dumps(obj['error'])[:300]}"
                        break
                    choices = obj.get("choices") or []
                    if choices and choices[0].get("text"):
                        chunk_times.append(now)
                    if obj.get("usage"):
                        usage_tokens = obj["usage"].get("completion_tokens")
    except Exception as exc:  # httpx transport errors, timeouts: recorded, the run goes on
        error = f"{type(exc).__name__}: {exc}"
    done = time.perf_counter() - t0
    tokens = int(usage_tokens) if usage_tokens is not None else len(chunk_times)
    first = chunk_times[0] if chunk_times else np.nan
    completion = done if chunk_times and not error else np.nan
    record = {
        "req_id": req_id,
        "arrival_time": arrival,
        "prefill_length": prefill,
        "decode_length": decode,
        "first_token_time": first,
        "completion_time": completion,
        "ttft": first - arrival,
        "tpot": (completion - first) / (tokens - 1) if tokens > 1 else np.nan,
        "total_delay": completion - arrival,
        "send_time": send,
        "tokens_received": tokens,
        "http_status": status,
        "error": error,
    }
    return record, chunk_times


def parse_prometheus(text: str) -> list[tuple[str, str, float]]:
    """(sample name, labels as sorted JSON, value) for every sample of a Prometheus text page."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        text_string_to_metric_families = None
    out = []
    if text_string_to_metric_families is not None:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.append((s.name, json.dumps(dict(sorted(s.labels.items()))), float(s.value)))
        return out
    for line in text.splitlines():  # minimal fallback: name{labels} value
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, _, rest = line.rpartition(" ")
        try:
            value = float(rest)
        except ValueError:
            continue
        name, _, labels = head.partition("{")
        pairs = {}
        for item in labels.rstrip("}").split(","):
            if "=" in item:
                k, v = item.split("=", 1)
                pairs[k.strip()] = v.strip().strip('"')
        out.append((name.strip(), json.dumps(dict(sorted(pairs.items()))), value))
    return out


async def _scrape(client, settings: LoadSettings, t0: float, stop: asyncio.Event, rows: list) -> None:
    url = settings.url.rstrip("/") + "/metrics"
    while not stop.is_set():
        try:
            resp = await client.get(url, timeout=5.0)
        except Exception:
            return
        if resp.status_code != 200:  # no /metrics on this server
            return
        now = time.perf_counter() - t0
        rows.extend((now, name, labels, value) for name, labels, value in parse_prometheus(resp.text))
        try:
            await asyncio.wait_for(stop.wait(), settings.metrics_interval_s)
        except asyncio.TimeoutError:
            pass


async def run_load_async(workload: Workload, settings: LoadSettings, power_monitor=None,
                         progress: bool = False, on_request=None) -> LoadResult:
    """Send the workload open-loop; returns the per-request, per-token and metrics tables.

    ``on_request(record, chunk_times)``, when given, is called as each request ends (its
    REQUEST_TRACE_COLUMNS record and its chunk times), so a caller can keep results as they come."""
    httpx = require("httpx", "calib")
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    timeout = httpx.Timeout(settings.request_timeout_s, connect=30.0)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    arrivals = (workload.arrival_time_s - workload.arrival_time_s[0]) * settings.time_scale
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as client:
        try:
            await client.get(settings.url.rstrip("/") + "/v1/models", timeout=10.0)
        except httpx.TransportError as exc:
            raise InputError(f"cannot reach {settings.url} ({type(exc).__name__}: {exc})") from None
        metric_rows: list = []
        stop = asyncio.Event()
        if power_monitor is not None:
            power_monitor.start()
        t0 = time.perf_counter()
        scraper = asyncio.create_task(_scrape(client, settings, t0, stop, metric_rows)) \
            if settings.metrics_interval_s > 0 else None
        tasks = []
        for i, (a, p, d) in enumerate(zip(arrivals, workload.prefill_tokens, workload.decode_tokens)):
            delay = a - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one_request(client, settings, i, float(a), int(p), int(d), t0)))
            if on_request is not None:  # as soon as the request ends, even while later ones are still sent
                tasks[-1].add_done_callback(_report_to(on_request))
        results = []
        for n, fut in enumerate(asyncio.as_completed(tasks), 1):
            results.append(await fut)
            if progress:
                print(f"\rcompleted {n}/{len(tasks)}", end="", file=sys.stderr)
        if progress:
            print(file=sys.stderr)
        wall = time.perf_counter() - t0
        stop.set()
        if scraper is not None:
            await scraper
        if power_monitor is not None:
            power_monitor.stop()
    results.sort(key=lambda r: r[0]["req_id"])
    requests = pd.DataFrame([r for r, _ in results], columns=REQUEST_TRACE_COLUMNS)
    gap_rows = [
        (r["req_id"], k, t, (t - times[k - 1]) if k else np.nan)
        for r, times in results
        for k, t in enumerate(times)
    ]
    gaps = pd.DataFrame(gap_rows, columns=TOKEN_GAP_COLUMNS)
    metrics = pd.DataFrame(metric_rows, columns=METRIC_COLUMNS)
    summary = summarize(requests, gaps, wall)
    summary.update({"url": settings.url, "model": settings.model, "time_scale": settings.time_scale,
                    "prompt_mode": settings.prompt_mode, "workload": workload.name,
                    "metrics_samples": int(len(metrics))})
    if power_monitor is not None:
        summary["power"] = power_monitor.summary()
        tokens = summary["tokens_received"]
        summary["energy_per_output_token_j"] = power_monitor.energy_j / tokens if tokens else None
    return LoadResult(requests, gaps, metrics, summary, power_monitor)


def _report_to(on_request):
    def done(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is None:
            on_request(*task.result())

    return done


def run_load(workload: Workload, settings: LoadSettings, power_monitor=None, progress: bool = False,
             on_request=None) -> LoadResult:
    """Synchronous wrapper of :func:`run_load_async`."""
    return asyncio.run(run_load_async(workload, settings, power_monitor, progress, on_request))


def summarize(requests: pd.DataFrame, gaps: pd.DataFrame, wall_s: float) -> dict[str, Any]:
    """The simulator's summary shape (``fluidserve.outputs.metrics.summarize_requests``: arrived,
    completed, throughput, ttft/tpot/total_delay statistics) plus the client's own keys:
    ``errors``, ``wall_s``, ``tokens_received``, ``send_lag_s_max`` and ``token_gap_*``."""
    try:
        from fluidserve.outputs.metrics import summarize_requests
    except ImportError:  # same core keys without the outputs module
        summarize_requests = None
    if summarize_requests is not None:
        out = summarize_requests(requests)
    else:
        done = requests["completion_time"].notna()
        out = {"arrived": int(len(requests)), "completed": int(done.sum()), "in_system": int((~done).sum()),
               "output_tokens": int(requests.loc[done, "decode_length"].sum())}
        for col in ("ttft", "tpot", "total_delay"):
            out.update(_stats(requests.loc[done, col], col))
    out.update({
        "errors": int((requests["error"] != "").sum()),
        "wall_s": wall_s,
        "tokens_received": int(requests["tokens_received"].sum()),
        "send_lag_s_max": float((requests["send_time"] - requests["arrival_time"]).max()),
    })
    out.update(_stats(gaps["gap_s"], "token_gap"))
    out["behind_schedule"] = schedule_warning(requests["arrival_time"], requests["send_time"])
    return out


#: the client counts as behind its schedule when a request left this late [s] ...
SEND_LAG_WARN_S = 0.1
#: ... or the achieved send rate is below this fraction of the scheduled rate.
SEND_RATE_WARN_FRACTION = 0.9


def schedule_warning(arrival_s, send_s) -> str | None:
    """A one-line warning when the client could not send on schedule, else None.

    ``arrival_s`` are the scheduled send times and ``send_s`` the actual ones (seconds from the
    start). A client that falls behind sends a lower rate than asked, so the server's measured
    TTFT and queueing are those of a lighter load.
    """
    a, t = np.asarray(arrival_s, dtype=float), np.asarray(send_s, dtype=float)
    ok = np.isfinite(a) & np.isfinite(t)
    a, t = a[ok], t[ok]
    if len(a) < 2:
        return None
    lag = float((t - a).max())
    span_a, span_t = float(a.max() - a.min()), float(t.max() - t.min())
    asked = (len(a) - 1) / span_a if span_a > 0 else float("inf")
    sent = (len(t) - 1) / span_t if span_t > 0 else float("inf")
    slow = span_a > 0 and sent < SEND_RATE_WARN_FRACTION * asked
    if lag <= SEND_LAG_WARN_S and not slow:
        return None
    return (f"the client fell behind its schedule: sent {sent:.1f} req/s of {asked:.1f} req/s scheduled, "
            f"a request left up to {lag:.2f} s late; the measured latencies are those of a lighter load "
            "(run the client on a less busy machine, or lower the rate)")


def _stats(series: pd.Series, prefix: str) -> dict[str, float | None]:
    v = series.dropna().to_numpy(dtype=float)
    if not len(v):
        return {f"{prefix}_{k}": None for k in ("mean", "p50", "p95", "p99", "max")}
    return {
        f"{prefix}_mean": float(v.mean()),
        f"{prefix}_p50": float(np.percentile(v, 50)),
        f"{prefix}_p95": float(np.percentile(v, 95)),
        f"{prefix}_p99": float(np.percentile(v, 99)),
        f"{prefix}_max": float(v.max()),
    }


# -- CLI ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="fluidserve YAML config: its workload section is sent")
    src.add_argument("--requests", help="requests CSV (arrival_time, prefill_length, decode_length)")
    parser.add_argument("--model", required=True, help="model name the server serves")
    parser.add_argument("--output-dir", required=True, help="directory for requests.csv, token_gaps.csv, ...")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply inter-arrival times (0.5 = 2x rate)")
    parser.add_argument("--max-requests", type=int, help="send only the first N requests")
    parser.add_argument("--prompt-mode", choices=["tokens", "text"], default="tokens")
    parser.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos (non-vLLM servers)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per-request timeout, seconds")
    parser.add_argument("--metrics-interval-s", type=float, default=1.0, help="/metrics scrape period (0: off)")
    parser.add_argument("--power-gpus", help="comma-separated NVML GPU indices to meter during the run")
    parser.add_argument("--api-key", help="Bearer token for the server")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")


def load_workload(config: str | None, requests: str | None, max_requests: int | None) -> Workload:
    """The workload named by --config or --requests, cut to --max-requests."""
    if config:
        from fluidserve.config import load_config
        from fluidserve.workload import make_workload

        workload = make_workload(load_config(config))
    else:
        from fluidserve.workload.traces import read_requests_csv

        workload = read_requests_csv(requests)
    if max_requests is not None:
        if max_requests < 1:
            raise InputError(f"--max-requests must be >= 1, got {max_requests}")
        workload = workload.subset(np.arange(len(workload)) < max_requests)
    return workload


@cli_errors
def main(args: argparse.Namespace) -> int:
    settings = LoadSettings(
        url=args.url, model=args.model, time_scale=args.time_scale, prompt_mode=args.prompt_mode,
        ignore_eos=not args.no_ignore_eos, request_timeout_s=args.timeout_s,
        metrics_interval_s=args.metrics_interval_s, api_key=args.api_key,
    )
    workload = load_workload(args.config, args.requests, args.max_requests)
    monitor = None
    if args.power_gpus:
        from fluidserve.calibration.power import PowerMonitor

        monitor = PowerMonitor(parse_gpus(args.power_gpus))
    result = run_load(workload, settings, monitor, progress=not args.json)
    result.write(args.output_dir)
    if monitor is not None:
        monitor.close()
    if result.summary.get("behind_schedule"):
        print(f"warning: {result.summary['behind_schedule']}", file=sys.stderr)
    if args.json:
        print(to_json(result.summary))
    else:
        s = result.summary
        print(f"{s['completed']}/{s['arrived']} requests completed, {s['errors']} errors, "
              f"{s['tokens_received']} tokens received in {s['wall_s']:.1f} s; wrote {args.output_dir}")
    return 0


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def parse_gpus(text: str) -> list[int]:
    """'0,1' -> [0, 1] (NVML indices)."""
    try:
        gpus = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--power-gpus: expected comma-separated GPU indices, got '{text}'") from None
    if not gpus or min(gpus) < 0:
        raise InputError(f"--power-gpus: expected GPU indices >= 0, got '{text}'")
    return gpus
