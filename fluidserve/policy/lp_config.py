"""The ``lp`` command's YAML schema: GPU pools, traffic classes, SLOs, objective (pydantic).

A pool reuses the run config's ``system`` and ``batch_time`` sections (batch time measured at
the pool's highest clock) and adds a clock list, a GPU count, a price and a power model. See
``config/lp_example.yaml``. Errors name the file and the dotted field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fluidserve.yamlio import read_yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fluidserve.batch_time import BatchTimeModel
from fluidserve.config import BatchTimeConfig, PolicyConfig, SystemConfig, format_validation_error
from fluidserve.energy import StepEnergyModel
from fluidserve.errors import InputError
from fluidserve.policy.frequency import GPU_POWER_PRESETS, FrequencyModel
from fluidserve.policy.steady import LengthLaw


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PowerRow(_Strict):
    clock_mhz: float = Field(..., gt=0)
    compute_w: float = Field(..., gt=0, description="busy power of compute-bound work at this clock, W")
    memory_w: float = Field(..., gt=0, description="busy power of memory-bound work at this clock, W")


class PowerSpec(_Strict):
    """Power model of a pool's GPU: a preset name and/or explicit values (see policy.frequency)."""

    gpu: str | None = Field(None, description=f"preset: one of {', '.join(GPU_POWER_PRESETS)}")
    f_max_mhz: float | None = Field(None, gt=0)
    idle_w: float | None = Field(None, ge=0)
    peak_w: float | None = Field(None, gt=0)
    memory_activity: float | None = Field(None, ge=0, le=1)
    exponent: float | None = Field(None, gt=0)
    compute_share: dict[str, float] | None = None
    power_table: list[PowerRow] | None = None

    @model_validator(mode="after")
    def _check(self) -> "PowerSpec":
        if self.gpu is None and None in (self.f_max_mhz, self.idle_w, self.peak_w):
            raise ValueError("give power.gpu (a preset) or all of power.f_max_mhz, idle_w, peak_w")
        if self.gpu is not None and self.gpu not in GPU_POWER_PRESETS:
            raise ValueError(f"unknown power.gpu '{self.gpu}'; choose one of {', '.join(GPU_POWER_PRESETS)}")
        return self


class StepEnergySpec(_Strict):
    """Measured step energy at the default clock: a preset file from ``calibrate fit`` and/or values."""

    preset: str | None = Field(None, description="YAML file with an 'energy' section ('fluidserve calibrate fit --out')")
    p_base_w: float | None = Field(None, gt=0, description="power over a whole step, W")
    e_prefill_j: float | None = Field(None, description="extra energy per prompt token, J")
    e_decode_j: float | None = Field(None, description="extra energy per decoding sequence, J")
    e_kv_j: float | None = Field(None, description="extra energy per KV token read, J")
    idle_w: float | None = Field(None, ge=0, description="power with no step running, W")
    power_scale: float | None = Field(
        None, gt=0, description="assume another GPU: the preset's powers times this (e.g. the TDP ratio), "
        "per-token energies over this pool's step times (StepEnergyModel.transferred)"
    )

    @model_validator(mode="after")
    def _check(self) -> "StepEnergySpec":
        if self.preset is None and None in (self.p_base_w, self.e_prefill_j, self.e_decode_j):
            raise ValueError("give energy.preset or energy.p_base_w, e_prefill_j and e_decode_j")
        if self.power_scale is not None and self.preset is None:
            raise ValueError("energy.power_scale needs energy.preset (the measured model it scales)")
        return self

    def model(self, base_dir: Path | None = None, batch_time: BatchTimeModel | None = None) -> StepEnergyModel:
        base: dict = {}
        if self.preset is not None:
            path = Path(self.preset)
            if not path.is_absolute() and base_dir is not None and not path.exists():
                path = base_dir / path
            measured = StepEnergyModel.from_yaml(path)
            if self.power_scale is not None:
                if batch_time is None:
                    raise InputError("energy.power_scale needs the pool's batch-time model")
                measured = measured.transferred(BatchTimeModel.from_yaml(path), batch_time, self.power_scale)
            base = measured.to_dict()
        for k in ("p_base_w", "e_prefill_j", "e_decode_j", "e_kv_j", "idle_w"):
            if getattr(self, k) is not None:
                base[k] = getattr(self, k)
        return StepEnergyModel.from_mapping(base)


class PoolSpec(_Strict):
    name: str = Field(..., min_length=1)
    count: int = Field(..., ge=1, description="GPUs (replicas) in the pool")
    cost_per_hour: float = Field(0.0, ge=0, description="price of one GPU, $/h")
    clocks_mhz: list[float] = Field(..., min_length=1, description="SM clocks the pool may be locked at, MHz")
    system: SystemConfig
    batch_time: BatchTimeConfig = Field(..., description="step-time coefficients at the highest clock")
    power: PowerSpec
    energy: StepEnergySpec | None = Field(
        None, description="measured step energy at the default clock (the power model then gives only the clock response)"
    )
    batch_time_by_clock: dict[float, BatchTimeConfig] | None = Field(
        None, description="measured coefficients at locked clocks (override the clock scaling)"
    )

    @model_validator(mode="after")
    def _check(self) -> "PoolSpec":
        if any(f <= 0 for f in self.clocks_mhz):
            raise ValueError(f"pool '{self.name}': clocks_mhz must be > 0")
        if len(set(self.clocks_mhz)) != len(self.clocks_mhz):
            raise ValueError(f"pool '{self.name}': clocks_mhz has duplicates")
        self.clocks_mhz = sorted(self.clocks_mhz)
        fm = self.frequency_model()
        if self.clocks_mhz[-1] > fm.f_max_mhz + 1e-9:
            raise ValueError(
                f"pool '{self.name}': clock {self.clocks_mhz[-1]} MHz is above f_max {fm.f_max_mhz} MHz"
            )
        return self

    def frequency_model(self, base_dir: Path | None = None) -> FrequencyModel:
        p = self.power
        kw = {
            "f_max_mhz": p.f_max_mhz, "idle_w": p.idle_w, "peak_w": p.peak_w,
            "memory_activity": p.memory_activity, "exponent": p.exponent,
            "compute_share": p.compute_share,
            "power_table": None if p.power_table is None else
            tuple((r.clock_mhz, r.compute_w, r.memory_w) for r in p.power_table),
            "batch_time_table": None if self.batch_time_by_clock is None else
            {float(f): c.model(base_dir) for f, c in self.batch_time_by_clock.items()},
        }
        if p.gpu is not None:
            return FrequencyModel.preset(p.gpu, **kw)
        return FrequencyModel(**{k: v for k, v in kw.items() if v is not None})

    def batch_time_model(self, base_dir: Path | None = None) -> BatchTimeModel:
        return self.batch_time.model(base_dir)

    def step_energy_model(self, base_dir: Path | None = None) -> StepEnergyModel | None:
        return None if self.energy is None else self.energy.model(base_dir, self.batch_time_model(base_dir))

    @property
    def f_max_clock(self) -> float:
        return self.clocks_mhz[-1]


class ClassSpec(_Strict):
    """A traffic class: Poisson arrivals, uniform integer lengths, and its SLOs (seconds)."""

    name: str = Field(..., min_length=1)
    rate: float = Field(..., gt=0, description="arrival rate, req/s")
    prefill_tokens: tuple[int, int] = Field(..., description="prompt length range [lo, hi], tokens")
    decode_tokens: tuple[int, int] = Field(..., description="output length range [lo, hi], tokens")
    ttft_s: float = Field(..., gt=0, description="time-to-first-token SLO, s")
    tpot_s: float = Field(..., gt=0, description="time-per-output-token SLO, s")

    @model_validator(mode="after")
    def _check(self) -> "ClassSpec":
        for field_name in ("prefill_tokens", "decode_tokens"):
            lo, hi = getattr(self, field_name)
            if not 1 <= lo <= hi:
                raise ValueError(f"class '{self.name}': {field_name} must be [lo, hi] with 1 <= lo <= hi, got [{lo}, {hi}]")
        return self

    @property
    def law(self) -> LengthLaw:
        return LengthLaw(tuple(self.prefill_tokens), tuple(self.decode_tokens))

    @property
    def slo_key(self) -> tuple[float, float]:
        return (self.ttft_s, self.tpot_s)


class SafetySpec(_Strict):
    """Margins that keep the fluid steady state a good description of the discrete engine."""

    rho_max: float = Field(0.85, gt=0, lt=1, description="utilization cap of a replica")
    slo_headroom: float = Field(0.8, gt=0, le=1, description="plan mean TTFT/TPOT <= headroom * SLO")
    kv_fraction: float = Field(0.8, gt=0, le=1, description="share of M_total the planned KV may use")
    budget_fraction: float = Field(0.6, gt=0, le=1, description="share of B the mean step's tokens may use")
    seq_fraction: float = Field(0.8, gt=0, le=1, description="share of max_num_seqs the running mass may use")
    tpot_mean_share: float = Field(
        0.75, gt=0, le=1, description="share of headroom x TPOT SLO for the mean step time; the rest covers prefill interference"
    )
    tpot_z: float = Field(
        1.28, ge=0, description="normal quantile of the per-request TPOT bound (1.28: 90% of requests)"
    )
    ttft_steps: float = Field(
        2.5, ge=1, description="TTFT in mean steps: residual of the current step + prefill step + first decode"
    )


class ValidationSpec(_Strict):
    enabled: bool = True
    num_requests: int = Field(20000, ge=100, description="requests per simulated policy (all classes)")
    warmup_fraction: float = Field(0.15, ge=0, lt=0.9, description="leading share of the arrival span not measured")
    slo_target: float = Field(0.9, gt=0, le=1, description="a class meets its SLOs when this share of requests does")
    within_pool_router: Literal["least_loaded", "round_robin"] = "least_loaded"
    lp_split: Literal["random", "smooth_round_robin"] = Field(
        "random", description="how the replay splits a class over its sub-pools: random (Poisson thinning, the LP's "
        "model) or smooth weighted round robin (deterministic; lower TTFT than the model)"
    )
    baselines: list[Literal["round_robin", "least_loaded", "best_single_clock"]] = Field(
        default_factory=lambda: ["round_robin", "least_loaded", "best_single_clock"]
    )
    band_samples: int = Field(40, ge=0, description="re-pricings for the uncertainty band (0: no band)")
    load_factors: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0, 1.25, 1.5], description="traffic scales of the energy-vs-load figure"
    )


class DisaggSpec(_Strict):
    """Prefill/decode disaggregation of one pool's GPU type."""

    pool: str = Field(..., description="name of the pool whose GPUs are split")
    gpus: int = Field(..., ge=2, description="GPUs available for the split")
    link_GBps: float = Field(50.0, gt=0, description="KV transfer bandwidth prefill -> decode, GB/s")
    ttft_split: list[float] = Field(
        default_factory=lambda: [0.2, 0.35, 0.5, 0.65, 0.8],
        description="shares of the TTFT budget given to the prefill stage, tried in turn",
    )


class LpConfig(_Strict):
    name: str = "lp"
    seed: int = 0
    objective: Literal["energy", "cost", "throughput"] = "energy"
    integer: bool = Field(True, description="integer GPU counts per clock (SCIP); false: the LP relaxation")
    pools: list[PoolSpec] = Field(..., min_length=1)
    classes: list[ClassSpec] = Field(..., min_length=1)
    safety: SafetySpec = SafetySpec()
    validation: ValidationSpec = ValidationSpec()
    policy: PolicyConfig = PolicyConfig()
    disagg: DisaggSpec | None = None

    base_dir: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _check(self) -> "LpConfig":
        for kind, items in (("pools", self.pools), ("classes", self.classes)):
            names = [x.name for x in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{kind}: duplicate name(s) {dup}")
        if self.disagg is not None and self.disagg.pool not in {p.name for p in self.pools}:
            raise ValueError(f"disagg.pool '{self.disagg.pool}' is not one of the pools")
        return self


def lp_config_from_dict(data, source: str = "<lp config>", base_dir: str | None = None) -> LpConfig:
    if not isinstance(data, dict):
        raise InputError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        cfg = LpConfig.model_validate(data)
    except ValidationError as exc:
        raise InputError(_name_items(format_validation_error(exc, source), data)) from None
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    cfg.base_dir = base_dir
    return cfg


def _name_items(msg: str, data: dict) -> str:
    """Add the pool/class name to 'pools.1.' style paths so the user finds the entry."""
    for kind in ("pools", "classes"):
        items = data.get(kind)
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict) and "name" in item:
                    msg = msg.replace(f"{kind}.{i}.", f"{kind}.{i}({item['name']}).")
                    msg = msg.replace(f"{kind}.{i}:", f"{kind}.{i}({item['name']}):")
    return msg


def load_lp_config(path: str | Path) -> LpConfig:
    path = Path(path)
    data = read_yaml(path, "lp config")
    return lp_config_from_dict(data, str(path), str(path.parent.resolve()))
