"""The ``plan`` command's YAML schema (pydantic): traffic classes with SLOs, the candidate space, the objective.

A plan file has four parts (see ``config/plan_azure_h100.yaml`` and ``config/plan_hetero.yaml``):

* ``traffic``: one or more classes. A class is either a trace (``trace:`` with ``path``,
  ``format``, ``rate_scale``, ``start_s``/``end_s``, as the run config's ``workload.trace``) or
  synthetic Poisson traffic (``rate`` req/s, uniform integer ``prefill_tokens``/``decode_tokens``
  ranges, over ``traffic.duration_s``). Each class has its own ``slo``.
* ``slo`` of a class: percentile thresholds named ``{ttft,tpot,e2e}_p{q}_s`` (for example
  ``ttft_p99_s: 1.0``: the class's 99th-percentile TTFT must be at most 1 s), and an optional
  ``attainment`` target: the share of the class's requests that meet every threshold of the class
  at once (each threshold read as a per-request deadline) must be at least this.
* ``candidates``: GPU types (preset name, ``cost_per_hour`` $/h per GPU, ``count`` available,
  optional measured ``batch_time`` at tensor_parallel 1 and the highest clock, optional ``power``
  model, ``clocks_mhz`` DVFS levels), ``tensor_parallel`` degrees and the scheduler settings to
  try (every combination is a candidate replica type).
* ``objective``: ``cost`` ($/h), ``gpus`` or ``energy`` (J per output token).

Errors name the file and the dotted field, as every config of the package.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fluidserve.config import BatchTimeConfig, PolicyConfig, SystemConfig, TraceConfig, format_validation_error
from fluidserve.errors import InputError
from fluidserve.policy.lp_config import PowerSpec, StepEnergySpec
from fluidserve.yamlio import read_yaml

#: SLO threshold keys: metric, percentile (e.g. ttft_p99_s, e2e_p90_s, tpot_p99.9_s).
SLO_KEY = re.compile(r"^(ttft|tpot|e2e)_p(\d{1,2}(?:\.\d+)?)_s$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SloSpec(BaseModel):
    """Percentile thresholds [s] keyed ``{metric}_p{q}_s`` and an optional attainment target (0-1]."""

    model_config = ConfigDict(extra="allow")

    attainment: float | None = Field(
        None, gt=0, le=1, description="share of requests that must meet every threshold at once")

    @model_validator(mode="after")
    def _check(self) -> "SloSpec":
        extra = dict(self.model_extra or {})
        if not extra:
            raise ValueError("give at least one threshold, e.g. ttft_p99_s: 1.0 (keys {ttft,tpot,e2e}_p{q}_s)")
        for key, value in extra.items():
            m = SLO_KEY.match(key)
            if m is None:
                raise ValueError(f"unknown SLO key '{key}'; use {{ttft,tpot,e2e}}_p{{q}}_s, e.g. ttft_p99_s")
            q = float(m.group(2))
            if not 0 < q < 100:
                raise ValueError(f"SLO key '{key}': percentile must be in (0, 100)")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"SLO '{key}' must be a number of seconds > 0 (got {value!r})")
        return self

    @property
    def thresholds(self) -> list[tuple[str, float, float]]:
        """(metric, percentile, threshold_s) for every threshold, in file order."""
        out = []
        for key, value in (self.model_extra or {}).items():
            m = SLO_KEY.match(key)
            out.append((m.group(1), float(m.group(2)), float(value)))
        return out


class TrafficClass(_Strict):
    """One traffic class: a trace, or synthetic Poisson traffic, and its SLO."""

    name: str = Field(..., min_length=1)
    trace: TraceConfig | None = None
    rate: float | None = Field(None, gt=0, description="synthetic: arrival rate, req/s")
    prefill_tokens: tuple[int, int] | None = Field(None, description="synthetic: prompt length range [lo, hi]")
    decode_tokens: tuple[int, int] | None = Field(None, description="synthetic: output length range [lo, hi]")
    slo: SloSpec

    @model_validator(mode="after")
    def _check(self) -> "TrafficClass":
        synth = (self.rate, self.prefill_tokens, self.decode_tokens)
        if self.trace is not None:
            if any(x is not None for x in synth):
                raise ValueError(f"class '{self.name}': give either trace or rate/prefill_tokens/decode_tokens")
        elif any(x is None for x in synth):
            raise ValueError(f"class '{self.name}': give a trace, or all of rate, prefill_tokens, decode_tokens")
        else:
            for field_name in ("prefill_tokens", "decode_tokens"):
                lo, hi = getattr(self, field_name)
                if not 1 <= lo <= hi:
                    raise ValueError(f"class '{self.name}': {field_name} must be [lo, hi] with 1 <= lo <= hi")
        return self


class Traffic(_Strict):
    classes: list[TrafficClass] = Field(..., min_length=1)
    duration_s: float = Field(600.0, gt=0, description="arrival window of the synthetic classes, s")
    warmup_s: float = Field(0.0, ge=0, description="requests arriving before this are simulated but not measured")

    @model_validator(mode="after")
    def _names(self) -> "Traffic":
        names = [c.name for c in self.classes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate class name(s) {dup}")
        return self


class GpuType(_Strict):
    """A GPU type the fleet may use."""

    type: str = Field(..., description="GPU preset name (fluidserve/data/gpu_specs.yaml)")
    cost_per_hour: float = Field(..., ge=0, description="price of one GPU, $/h")
    count: int = Field(..., ge=1, description="GPUs of this type available")
    batch_time: BatchTimeConfig | None = Field(
        None, description="measured step-time coefficients at tensor_parallel 1 and the highest clock; "
        "default: the roofline prediction (fluidserve.calibration.roofline)")
    power: PowerSpec | None = Field(None, description="power model (default: the preset of the GPU, if any)")
    energy: StepEnergySpec | None = Field(
        None, description="measured step energy at tensor_parallel 1 and the highest clock (e.g. the batch_time "
        "preset's energy section); the power model gives its clock response. Default: the power model alone")
    clocks_mhz: list[float] | None = Field(None, description="DVFS levels to try, MHz (default: the highest clock)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        from fluidserve import specs

        return specs.gpu(v).name


class SchedulerSpace(_Strict):
    """Scheduler settings to try (every combination)."""

    max_num_batched_tokens: list[int] = Field(default_factory=lambda: [8192], min_length=1)
    max_num_seqs: list[int] = Field(default_factory=lambda: [256], min_length=1)
    chunked_prefill: list[bool] = Field(default_factory=lambda: [True], min_length=1)
    enable_prefix_caching: list[bool] = Field(default_factory=lambda: [False], min_length=1)
    scheduler: list[str] | None = Field(None, description="engine schedulers (system.scheduler), when the engine has them")

    @model_validator(mode="after")
    def _check(self) -> "SchedulerSpace":
        for name in ("max_num_batched_tokens", "max_num_seqs"):
            if any(v < 1 for v in getattr(self, name)):
                raise ValueError(f"{name} values must be >= 1")
        fields = SystemConfig.model_fields
        if True in self.enable_prefix_caching and "enable_prefix_caching" not in fields:
            raise ValueError("enable_prefix_caching: the simulator has no prefix cache yet (system.enable_prefix_caching)")
        if self.scheduler is not None:
            if "scheduler" not in fields:
                raise ValueError("scheduler: the simulator has no system.scheduler setting yet")
            known = get_args(fields["scheduler"].annotation)
            bad = [x for x in self.scheduler if x not in known]
            if bad:
                raise ValueError(f"scheduler: unknown {bad}; choose from {list(known)}")
        return self


class Candidates(_Strict):
    model: str = Field(..., description="model preset name (fluidserve/data/model_specs.yaml) or a Hugging Face "
                       "config.json path (relative to the plan file)")
    gpus: list[GpuType] = Field(..., min_length=1)
    tensor_parallel: list[int] = Field(default_factory=lambda: [1], min_length=1)
    scheduler: SchedulerSpace = SchedulerSpace()
    router: Literal["least_loaded", "round_robin"] = "least_loaded"
    mode: Literal["swapping", "recompute"] = "recompute"
    max_replicas: int | None = Field(None, ge=1, description="cap on replicas per candidate (default: GPUs available)")

    @field_validator("model")
    @classmethod
    def _known(cls, v: str) -> str:
        """A preset name is checked here; a config.json path when the plan's folder is known (space.model_spec)."""
        from fluidserve import specs

        if not (v.endswith(".json") or "/" in v or "\\" in v):
            specs.model(v)
        return v

    @model_validator(mode="after")
    def _check(self) -> "Candidates":
        if any(t < 1 for t in self.tensor_parallel):
            raise ValueError("tensor_parallel values must be >= 1")
        types = [g.type for g in self.gpus]
        dup = sorted({t for t in types if types.count(t) > 1})
        if dup:
            raise ValueError(f"gpus: duplicate type(s) {dup}")
        return self


class SearchSpec(_Strict):
    screen: Literal["quasistatic_tails", "fluid_stepclock"] = Field(
        "quasistatic_tails", description="latency model of the screen (fluidserve.plan.screen.LATENCY_MODELS): "
        "quasistatic_tails (closed forms + queueing tails, fast) or fluid_stepclock (the fluid model's per-request delays)")
    verify_top: int = Field(3, ge=1, description="replica types verified in the simulator (best screened first)")
    bin_s: float = Field(10.0, gt=0, description="rate bins of the screen's quasi-static queue, s")
    heterogeneous: bool = Field(True, description="also plan a mix of GPU types with the LP (two or more types)")
    max_simulations: int = Field(40, ge=1, description="cap on simulator runs")


class PlanConfig(_Strict):
    name: str = "plan"
    seed: int = 0
    output_dir: str = "results"
    objective: Literal["cost", "gpus", "energy"] = "cost"
    traffic: Traffic
    candidates: Candidates
    search: SearchSpec = SearchSpec()
    policy: PolicyConfig = PolicyConfig()

    base_dir: str | None = Field(None, exclude=True)

    def resolve_path(self, p: str) -> Path:
        path = Path(p)
        if path.is_absolute() or path.exists() or self.base_dir is None:
            return path
        return Path(self.base_dir) / path


def plan_config_from_dict(data, source: str = "<plan config>", base_dir: str | None = None) -> PlanConfig:
    if not isinstance(data, dict):
        raise InputError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        cfg = PlanConfig.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, source)) from None
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    cfg.base_dir = base_dir
    return cfg


def load_plan_config(path: str | Path) -> PlanConfig:
    path = Path(path)
    data = read_yaml(path, "plan config")
    return plan_config_from_dict(data, str(path), str(path.parent.resolve()))
