"""Prometheus ``/metrics`` with vLLM-like names, for the simulated endpoint.

Gauges are read from the engine at scrape time (no per-step cost):

* ``vllm:num_requests_running``: requests in the running batch (decoding + prefilling);
* ``vllm:num_requests_waiting``: requests waiting for admission (including ones received
  but not yet seen by an engine step);
* ``vllm:num_requests_swapped``: requests whose KV cache is swapped out to CPU;
* ``vllm:gpu_cache_usage_perc``: KV blocks in use / total blocks (a fraction 0..1, as vLLM);
* ``vllm:num_preemptions_total``: swap-outs + recompute preemptions so far;
* ``fluidserve:sim_time_seconds`` and ``fluidserve:time_scale``.

Counters and histograms are updated by the driver (times are simulated seconds):
``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``, ``vllm:iteration_tokens_total``
(tokens per engine step), ``vllm:time_to_first_token_seconds``,
``vllm:time_per_output_token_seconds``, ``vllm:e2e_request_latency_seconds``,
``vllm:request_success_total``, ``fluidserve:engine_steps_total`` and
``fluidserve:release_lag_seconds`` (wall seconds by which a step's token release was late).

Each app gets its own registry, so several servers can live in one process (tests).
"""

from __future__ import annotations

from fluidserve.errors import require
from fluidserve.serve.driver import SimDriver, TokenStream

ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TPOT_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class ServeMetrics:
    """The endpoint's registry; ``observe_step`` is the driver's observer."""

    def __init__(self, driver: SimDriver, model_name: str) -> None:
        pc = require("prometheus_client", "serve")
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        pc.disable_created_metrics()  # no *_created series (as vLLM's exposition)
        self.driver = driver
        self.model_name = model_name
        self.registry = pc.CollectorRegistry(auto_describe=False)
        labels = ["model_name"]
        lv = {"model_name": model_name}
        reg = self.registry
        self.prompt_tokens = pc.Counter("vllm:prompt_tokens", "Prefill tokens of received requests.", labels, registry=reg).labels(**lv)
        self.generation_tokens = pc.Counter("vllm:generation_tokens", "Generated (released) tokens.", labels, registry=reg).labels(**lv)
        self.iteration_tokens = pc.Histogram(
            "vllm:iteration_tokens_total", "Tokens (prefill + decode) per engine step.", labels,
            buckets=ITERATION_TOKEN_BUCKETS, registry=reg,
        ).labels(**lv)
        self.ttft = pc.Histogram(
            "vllm:time_to_first_token_seconds", "Time to first token (simulated seconds).", labels,
            buckets=TTFT_BUCKETS, registry=reg,
        ).labels(**lv)
        self.tpot = pc.Histogram(
            "vllm:time_per_output_token_seconds", "Time per output token after the first (simulated seconds).",
            labels, buckets=TPOT_BUCKETS, registry=reg,
        ).labels(**lv)
        self.e2e = pc.Histogram(
            "vllm:e2e_request_latency_seconds", "Arrival to last token (simulated seconds).", labels,
            buckets=E2E_BUCKETS, registry=reg,
        ).labels(**lv)
        self.success = pc.Counter(
            "vllm:request_success", "Finished requests.", ["model_name", "finished_reason"], registry=reg
        )
        self.steps = pc.Counter("fluidserve:engine_steps", "Engine steps executed.", labels, registry=reg).labels(**lv)
        self.lag = pc.Histogram(
            "fluidserve:release_lag_seconds", "Wall seconds by which token releases were late.", labels,
            buckets=LAG_BUCKETS, registry=reg,
        ).labels(**lv)
        self.finish_reason: dict[int, str] = {}

        engine = driver.engine
        clock = driver.clock

        class _EngineGauges:
            def collect(self_inner):
                def gauge(name, doc, value):
                    g = GaugeMetricFamily(name, doc, labels=labels)
                    g.add_metric([model_name], value)
                    return g

                yield gauge("vllm:num_requests_running", "Requests in the running batch.", engine.num_running)
                yield gauge("vllm:num_requests_waiting", "Requests waiting to be admitted.", engine.num_waiting + engine.num_pending)
                yield gauge("vllm:num_requests_swapped", "Requests swapped out to CPU.", engine.num_swapped)
                usage = engine.kv_blocks_used / engine.kv_blocks_total if engine.kv_blocks_total else 0.0
                yield gauge("vllm:gpu_cache_usage_perc", "KV-cache usage, fraction of blocks in use (0..1).", usage)
                yield gauge("fluidserve:sim_time_seconds", "Current simulated time.", clock.now_s())
                yield gauge("fluidserve:time_scale", "Simulated seconds per wall second.", clock.time_scale)
                c = CounterMetricFamily("vllm:num_preemptions", "Preemptions (swap-outs and recomputes).", labels=labels)
                c.add_metric([model_name], engine.num_preemptions)
                yield c

        reg.register(_EngineGauges())

    def observe_request(self, prompt_tokens: int) -> None:
        self.prompt_tokens.inc(prompt_tokens)

    def observe_abort(self) -> None:
        """A request aborted because its client disconnected (vLLM's finished_reason ``abort``)."""
        self.success.labels(model_name=self.model_name, finished_reason="abort").inc()

    def observe_step(self, snapshot: tuple | None, released: list[TokenStream], lag_s: float) -> None:
        """Driver observer: one call per engine step, after its tokens are released."""
        self.steps.inc()
        self.lag.observe(max(lag_s, 0.0))
        if snapshot is not None:
            self.iteration_tokens.observe(snapshot[3])  # batch_tokens = prefill + decode
        new_tokens = 0
        for s in released:
            new_tokens += s.released - s.reported
            s.reported = s.released
            if s.finished:
                self.ttft.observe(s.first_token_s - s.arrival_s)
                if s.decode_tokens > 1:
                    self.tpot.observe((s.completion_s - s.first_token_s) / (s.decode_tokens - 1))
                self.e2e.observe(s.completion_s - s.arrival_s)
                self.success.labels(model_name=self.model_name, finished_reason=s.finish_reason).inc()
        self.generation_tokens.inc(new_tokens)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format and its content type."""
        pc = require("prometheus_client", "serve")
        return pc.generate_latest(self.registry), pc.CONTENT_TYPE_LATEST
