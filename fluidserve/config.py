"""Configuration: one pydantic schema, validated once at load.

Everything a run needs lives in one YAML file (see ``config/default.yaml``). Unknown keys,
wrong types and out-of-range values raise :class:`~fluidserve.errors.InputError` naming the
file and the dotted field path. Code downstream trusts a loaded :class:`Config`.
"""

from __future__ import annotations

from pathlib import Path
import math
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fluidserve import guards
from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError
from fluidserve.yamlio import read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info) -> Any:
        """pydantic reads ``true`` as 1 for an int/float field; refuse it (``M_total: true``)."""
        if isinstance(value, bool):
            ann = cls.model_fields[info.field_name].annotation
            if ann is not bool and bool not in typing.get_args(ann):
                raise ValueError("expected a number, not a boolean")
        return value


class SystemConfig(_Strict):
    """One serving replica (one engine instance)."""

    scheduler: Literal["vllm_v1", "vllm_v0"] = Field(
        "vllm_v1", description="vllm_v1: vLLM V1 (recompute, chunked prefill, prefix caching); vllm_v0: the seed's "
        "V0 semantics (mode swapping/recompute, victim_policy)")
    mode: Literal["swapping", "recompute"] = Field("swapping", description="preemption mode of vllm_v0 (vllm_v1 always recomputes)")
    M_total: int | None = Field(None, gt=0, description="KV-cache capacity in tokens")
    num_gpu_blocks: int | None = Field(
        None, ge=2, description="KV blocks (vLLM's num_gpu_blocks), instead of M_total; vllm_v1 keeps one as the null block")
    enable_prefix_caching: bool | None = Field(
        None, description="prefix caching (vllm_v1 only; default on, like vLLM)")
    gpu: str | None = Field(None, description="GPU preset name, used to derive M_total when it is not given")
    model: str | None = Field(None, description="model preset name, used to derive M_total and KV bytes")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel: int = Field(1, ge=1)
    block_size: int = Field(16, ge=1, le=1024, description="KV block size in tokens")
    B: int = Field(2048, ge=1, description="max batched tokens per step (prefill + decode)")
    max_num_seqs: int = Field(256, ge=1, description="max sequences in the running batch")
    chunked_prefill: bool | None = Field(None, description="default: on under vllm_v1 (as vLLM V1), off under vllm_v0")
    swap_bandwidth_GBps: float = Field(25.0, gt=0, description="GPU<->CPU swap bandwidth, GB/s")
    kv_bytes_per_token: int | None = Field(
        None, gt=0, description="KV bytes per token (all layers); from the model preset if omitted, else 131072"
    )

    @model_validator(mode="after")
    def _resolve_memory(self) -> "SystemConfig":
        v1 = self.scheduler == "vllm_v1"
        if self.chunked_prefill is None:
            object.__setattr__(self, "chunked_prefill", v1)
        if self.enable_prefix_caching is None:
            object.__setattr__(self, "enable_prefix_caching", v1)
        elif self.enable_prefix_caching and not v1:
            raise ValueError("system.enable_prefix_caching needs system.scheduler: vllm_v1")
        if self.num_gpu_blocks is not None:
            if self.M_total is not None and self.M_total != self.num_gpu_blocks * self.block_size:
                raise ValueError("give system.M_total or system.num_gpu_blocks, not both")
            object.__setattr__(self, "M_total", self.num_gpu_blocks * self.block_size)
        if self.M_total is None or self.kv_bytes_per_token is None:
            if self.M_total is None and (self.gpu is None or self.model is None):
                raise ValueError("give system.M_total (KV tokens), or both system.gpu and system.model to derive it")
            if self.gpu is not None or self.model is not None:
                from fluidserve import specs

                if self.kv_bytes_per_token is None and self.model is not None:
                    object.__setattr__(self, "kv_bytes_per_token", specs.kv_bytes_per_token(self.model))
                if self.M_total is None:
                    object.__setattr__(
                        self,
                        "M_total",
                        specs.derive_m_total(
                            self.gpu, self.model, self.gpu_memory_utilization, self.tensor_parallel
                        ),
                    )
            if self.kv_bytes_per_token is None:
                object.__setattr__(self, "kv_bytes_per_token", 131072)
        return self

    @property
    def gpu_blocks(self) -> int:
        """Blocks of the KV pool (``num_gpu_blocks``, else ``M_total // block_size``)."""
        return self.num_gpu_blocks if self.num_gpu_blocks is not None else self.M_total // self.block_size

    @property
    def total_blocks(self) -> int:
        """Blocks that hold KV: one less than the pool under vllm_v1 (vLLM's null block)."""
        return self.gpu_blocks - (1 if self.scheduler == "vllm_v1" else 0)


class BatchTimeConfig(_Strict):
    """Either a preset file from ``calibrate fit`` or the coefficients (seconds)."""

    preset: str | None = Field(None, description="YAML file written by 'fluidserve calibrate fit --out'")
    d0_s: float | None = Field(None, gt=0)
    d1_prefill_s: float | None = Field(None, ge=0)
    d1_decode_s: float | None = Field(None, ge=0)
    d1_s: float | None = Field(None, ge=0, description="two-parameter shortcut: d1_prefill = d1_decode = d1")
    d2_kv_s: float | None = Field(None, ge=0)
    d3_prefill_attn_s: float | None = Field(None, ge=0, description="s per query x key pair of prefill attention")
    moe_expert_s: float | None = Field(None, ge=0, description="s per distinct expert a step activates (all layers)")
    moe_num_experts: int | None = Field(None, ge=0, description="routed experts per MoE layer")
    moe_top_k: int | None = Field(None, ge=0, description="experts per token")

    @model_validator(mode="after")
    def _check(self) -> "BatchTimeConfig":
        if self.preset is None:
            if self.d0_s is None:
                raise ValueError("give batch_time.preset or batch_time.d0_s")
            if self.d1_s is None and (self.d1_prefill_s is None or self.d1_decode_s is None):
                raise ValueError("give batch_time.d1_s, or both batch_time.d1_prefill_s and batch_time.d1_decode_s")
        if self.d1_s is not None and (self.d1_prefill_s is not None or self.d1_decode_s is not None):
            raise ValueError("batch_time.d1_s cannot be combined with d1_prefill_s / d1_decode_s")
        return self

    def model(self, base_dir: Path | None = None) -> BatchTimeModel:
        """The :class:`BatchTimeModel`; explicit coefficients override the preset's."""
        if self.preset is not None:
            path = Path(self.preset)
            if not path.is_absolute() and base_dir is not None and not path.exists():
                path = base_dir / path
            base = BatchTimeModel.from_yaml(path).to_dict()
        else:
            base = {"d2_kv_s": 0.0}
        for key in ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s", "d3_prefill_attn_s", "moe_expert_s",
                    "moe_num_experts", "moe_top_k"):
            value = getattr(self, key)
            if value is not None:
                base[key] = value
        if self.d1_s is not None:
            base["d1_prefill_s"] = base["d1_decode_s"] = self.d1_s
        return BatchTimeModel(**base)


class PolicyConfig(_Strict):
    queue_policy: Literal["FCFS", "priority", "shortest_predicted"] = Field(
        "FCFS", description="FCFS; priority (vLLM's, lowest value first); shortest_predicted: shortest predicted "
        "output first with aging (fluidserve/sim/length_aware.py)")
    victim_policy: Literal["LIFO", "FIFO", "random", "LRU"] = "LIFO"
    length_predictor: str = Field(
        "exact", description="output-length predictions for shortest_predicted / least_predicted_work: exact "
        "(the true max_tokens), noisy (true x exp(N(0, prediction_noise^2))), or a predictor file from "
        "'fluidserve predict fit'")
    prediction_noise: float = Field(0.0, ge=0, description="sigma of the log-normal noise of length_predictor: noisy")
    aging_tokens_per_s: float = Field(
        50.0, ge=0, description="shortest_predicted: predicted tokens of rank a waiting request gains per second")


class MMPPConfig(_Strict):
    """Two-state Markov-modulated Poisson process (rates in req/s, sojourns in s)."""

    rate_low: float = Field(..., gt=0)
    rate_high: float = Field(..., gt=0)
    mean_low_s: float = Field(..., gt=0)
    mean_high_s: float = Field(..., gt=0)


class TraceConfig(_Strict):
    path: str
    format: Literal["azure", "burstgpt", "generic"] = "generic"
    start_s: float = Field(0.0, ge=0, description="window start, seconds after the first arrival")
    end_s: float | None = Field(None, gt=0, description="window end, seconds after the first arrival")
    rate_scale: float = Field(1.0, gt=0, description="multiply the arrival rate (divide inter-arrival times)")
    L_filter: int | None = Field(None, gt=0, description="drop requests with prefill + decode > L_filter tokens")
    max_requests: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _window(self) -> "TraceConfig":
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"workload.trace.end_s ({self.end_s}) must be > start_s ({self.start_s})")
        return self


class SharedPrefixConfig(_Strict):
    """Shared system prompts: each request gets one of ``num_groups`` prompts of
    ``system_prompt_len`` tokens followed by ``question_len`` (inclusive range) private tokens."""

    num_groups: int = Field(..., ge=1, description="number of distinct shared system prompts (prefix groups)")
    system_prompt_len: int = Field(..., ge=1, description="tokens of each group's shared system prompt")
    question_len: tuple[int, int] = Field(..., description="[lo, hi] private prompt tokens after it")

    @model_validator(mode="after")
    def _range(self) -> "SharedPrefixConfig":
        lo, hi = self.question_len
        if not 0 <= lo <= hi:
            raise ValueError(f"workload.shared_prefix.question_len must be [lo, hi] with 0 <= lo <= hi, got {list(self.question_len)}")
        return self


class WorkloadConfig(_Strict):
    source: Literal["synthetic", "trace"] = "synthetic"
    scenario: Literal["normal", "heavy", "bursty"] = "normal"
    arrival_process: Literal["poisson", "gamma", "mmpp"] = "poisson"
    arrival_rate: float | None = Field(None, gt=0, description="req/s; the scenario's default if omitted")
    num_requests: int = Field(1000, gt=0)
    gamma_cv: float = Field(2.0, gt=1, description="coefficient of variation of Gamma inter-arrivals (> 1)")
    mmpp: MMPPConfig | None = None
    trace: TraceConfig | None = None
    shared_prefix: SharedPrefixConfig | None = Field(
        None, description="synthetic prompts = a shared system prompt + a private question (prefix caching)")

    @model_validator(mode="after")
    def _check(self) -> "WorkloadConfig":
        if self.source == "trace" and self.trace is None:
            raise ValueError("workload.source is 'trace' but workload.trace (path, format) is missing")
        guards.check_num_requests(self.num_requests)
        if self.source == "synthetic" and self.arrival_rate is not None:
            guards.check_arrival_window(
                self.num_requests / self.arrival_rate,
                f"workload.arrival_rate = {self.arrival_rate:g} req/s with {self.num_requests:,} requests",
            )
        return self


class ClusterConfig(_Strict):
    replicas: int = Field(1, ge=1)
    router: Literal["round_robin", "least_loaded", "weighted", "least_kv", "least_predicted_work"] = "round_robin"
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> "ClusterConfig":
        guards.check_replicas(self.replicas)
        if self.weights is not None:
            bad = [w for w in self.weights if not math.isfinite(w)]
            if bad:
                raise ValueError(f"cluster.weights must be finite numbers, got {bad[0]}")
        if self.router == "weighted":
            if self.weights is None:
                raise ValueError("cluster.router 'weighted' needs cluster.weights (one per replica)")
            if len(self.weights) != self.replicas:
                raise ValueError(
                    f"cluster.weights has {len(self.weights)} entries but cluster.replicas is {self.replicas}"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("cluster.weights must be >= 0 with a positive sum")
        return self


class SimConfig(_Strict):
    record_events: bool = Field(True, description="write events.csv and memory_events.csv")
    snapshot_every: int = Field(1, ge=1, description="record one batch snapshot every N steps")
    max_steps: int | None = Field(None, gt=0, description="safety cap on engine steps")


#: the integrators of ``scipy.integrate.solve_ivp`` (``fluid.method``).
SOLVE_IVP_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")


class FluidConfig(_Strict):
    enabled: bool = True
    num_classes: int = Field(4, ge=1, le=64, description="request classes K (quantile bins of a trace)")
    backend: Literal["stepclock", "stepclock_jax", "scipy", "jax", "stepmap", "quasistatic"] = Field(
        "stepclock", description="stepclock / stepclock_jax: the step-clock transport model (numpy / compiled "
        "JAX); scipy / jax: the Erlang-stage ODE; stepmap: the exact discrete-time limit (one iteration per "
        "engine step); quasistatic: each rate bin at its steady state plus a fluid queue")
    method: str = Field("RK45", description="solve_ivp method of the scipy backend (RK45 measured fastest; LSODA, BDF also work)")
    rtol: float = Field(1e-6, gt=0)
    atol: float = Field(1e-8, gt=0)
    bin_s: float = Field(10.0, gt=0, description="bin width for time-varying arrival rates, s")
    horizon_s: float | None = Field(None, gt=0, description="solve horizon, s; default: last arrival + drain time")
    stages: int | None = Field(None, ge=1, description="decode stages per class (None: exact, one per token)")
    dt_out_s: float | None = Field(None, gt=0, description="fluid output spacing, s (None: window/2000 in [0.01, 1])")
    step_stride: int | None = Field(None, ge=1, description="stepclock: engine steps per macro step (None: auto; 1: exact step map)")

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value not in SOLVE_IVP_METHODS:
            raise ValueError(f"unknown solve_ivp method; choose one of {', '.join(SOLVE_IVP_METHODS)}")
        return value


class Config(_Strict):
    name: str = "default"
    seed: int = Field(0, ge=0, description="random seed (numpy needs a non-negative integer)")
    output_dir: str = "results"
    system: SystemConfig
    batch_time: BatchTimeConfig
    policy: PolicyConfig = PolicyConfig()
    workload: WorkloadConfig = WorkloadConfig()
    cluster: ClusterConfig = ClusterConfig()
    sim: SimConfig = SimConfig()
    fluid: FluidConfig = FluidConfig()

    # set by load_config: the directory of the YAML file (for relative paths)
    base_dir: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _sizes(self) -> "Config":
        sysc = self.system  # checked here, not in SystemConfig: internal code builds minimal stand-in systems
        if sysc.total_blocks < 1:
            raise ValueError(
                f"system.M_total = {sysc.M_total} tokens gives {sysc.total_blocks} usable KV blocks of "
                f"system.block_size = {sysc.block_size} (vllm_v1 keeps one null block): every request would be rejected"
            )
        w = self.workload
        if self.fluid.enabled and w.source == "synthetic" and w.arrival_rate is not None:
            guards.check_fluid_sizes(self.fluid, w.num_requests / w.arrival_rate, estimated=True)
        return self

    def batch_time_model(self) -> BatchTimeModel:
        return self.batch_time.model(Path(self.base_dir) if self.base_dir else None)

    def resolve_path(self, p: str) -> Path:
        """A path from the config: absolute, relative to the CWD if it exists, else to the YAML file."""
        path = Path(p)
        if path.is_absolute() or path.exists() or self.base_dir is None:
            return path
        return Path(self.base_dir) / path

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"base_dir"})


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted field path and the bad value."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        value = err.get("input")
        shown = "" if err["type"] in ("missing",) or isinstance(value, dict) else f" (got {_short_repr(value)})"
        parts.append(f"{loc}: {msg}{shown}" if loc else f"{msg}")
    return f"{source}: " + "; ".join(parts)


def config_from_dict(data: dict[str, Any], source: str = "<config>", base_dir: str | None = None) -> Config:
    if not isinstance(data, dict):
        raise InputError(f"{source}: top level must be a mapping of sections, got {type(data).__name__}")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, source)) from None
    except InputError as exc:  # raised from inside a validator (e.g. unknown GPU preset)
        raise InputError(f"{source}: {exc}") from None
    cfg.base_dir = base_dir
    return cfg


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate a YAML config. ``overrides`` maps dotted paths to values."""
    path = Path(path)
    data = read_yaml(path, "config")
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    cfg = config_from_dict(data, str(path), str(path.parent.resolve()))
    check_overrides_apply(cfg, overrides or {}, f"{path}: override")
    return cfg


def check_overrides_apply(cfg: Config, dotted_keys, source: str) -> None:
    """Refuse an override that the loaded config would ignore (not silently drop it)."""
    if cfg.workload.source == "trace" and "workload.num_requests" in dotted_keys:
        raise InputError(
            f"{source} workload.num_requests does not apply to a trace workload (workload.source is 'trace'); "
            "cap the trace with workload.trace.max_requests"
        )


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``dotted='a.b'``, creating sections as needed."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key, {}), dict):
            raise InputError(f"cannot set '{dotted}': '{key}' is not a section")
        node = node.setdefault(key, {})
    node[keys[-1]] = value
