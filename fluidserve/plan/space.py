"""The candidate space: replica types (GPU x tensor parallel x scheduler settings x clock) and fleets.

A *replica type* is one engine instance: ``tensor_parallel`` GPUs of one type at one SM clock,
with one set of scheduler settings. Its step time:

* at tensor_parallel 1 and the highest clock, the GPU's measured ``batch_time`` if the plan gives
  one, else the roofline prediction (:func:`fluidserve.calibration.roofline.predict`);
* at tensor_parallel t > 1 with a measured model, each coefficient times the roofline ratio
  ``roofline(t) / roofline(1)`` (the measured efficiency kept, the TP physics of the roofline:
  weight shards, all-reduce costs);
* at a lower clock, :meth:`FrequencyModel.batch_time` (compute-bound shares scale with f_max/f).

Its step energy: :meth:`FrequencyModel.energy_model` at the clock, times tensor_parallel (each
GPU draws power for the whole step), calibrated coefficient by coefficient to the GPU's measured
step energy (``energy:``, :class:`fluidserve.energy.StepEnergyModel`) where it was measured
(tensor_parallel 1, highest clock).

Its KV capacity comes from :func:`fluidserve.specs.derive_m_total`. A *fleet* is ``replicas``
copies of one replica type (homogeneous) or several groups (heterogeneous, :mod:`.hetero`).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from fluidserve import specs
from fluidserve.batch_time import BatchTimeModel
from fluidserve.config import (
    BatchTimeConfig, ClusterConfig, Config, FluidConfig, SimConfig, SystemConfig, format_validation_error,
)
from fluidserve.errors import InputError
from fluidserve.policy.frequency import COEFFICIENTS, GPU_POWER_PRESETS, FrequencyModel

#: GPU presets (specs names) -> power presets (policy.frequency names).
POWER_PRESET_OF_GPU = {"H100-SXM": "H100-SXM", "H200": "H200", "A100-80GB": "A100-SXM", "A100-40GB": "A100-SXM",
                       "L40S": "L40S"}


@dataclass(frozen=True)
class ReplicaType:
    """One engine instance's hardware and settings (see the module docstring).

    Attributes:
        gpu_type: GPU preset name; tensor_parallel: GPUs per replica; clock_mhz: locked SM clock.
        cost_per_hour: $/h of one replica (tensor_parallel GPUs).
        batch_time: step-time model at this clock [s]; energy: step-energy model [J] (same form).
        idle_w: power of one idle replica [W]; M_total: KV capacity [tokens].
        gpus_available: GPUs of this type in the candidate space.
    """

    gpu_type: str
    tensor_parallel: int
    clock_mhz: float
    max_num_batched_tokens: int
    max_num_seqs: int
    chunked_prefill: bool
    enable_prefix_caching: bool
    scheduler: str | None
    cost_per_hour: float
    batch_time: BatchTimeModel
    energy: BatchTimeModel
    idle_w: float
    M_total: int
    kv_bytes_per_token: int
    gpus_available: int
    mode: str = "recompute"

    @property
    def key(self) -> str:
        """A stable, readable identifier (used as the resume key)."""
        parts = [self.gpu_type, f"tp{self.tensor_parallel}", f"{self.clock_mhz:g}MHz",
                 f"B{self.max_num_batched_tokens}", f"S{self.max_num_seqs}",
                 "chunked" if self.chunked_prefill else "unchunked"]
        if self.enable_prefix_caching:
            parts.append("prefix")
        if self.scheduler:
            parts.append(self.scheduler)
        return "/".join(parts)

    @property
    def max_replicas(self) -> int:
        return self.gpus_available // self.tensor_parallel

    def settings(self) -> dict:
        """The type's fields for reports (no models)."""
        return {
            "gpu_type": self.gpu_type, "tensor_parallel": self.tensor_parallel, "clock_mhz": self.clock_mhz,
            "max_num_batched_tokens": self.max_num_batched_tokens, "max_num_seqs": self.max_num_seqs,
            "chunked_prefill": self.chunked_prefill, "enable_prefix_caching": self.enable_prefix_caching,
            "scheduler": self.scheduler, "M_total_tokens": self.M_total,
            "cost_per_hour_per_replica": self.cost_per_hour,
        }

    def run_config(self, replicas: int, plan, name: str | None = None) -> Config:
        """The simulator :class:`Config` of ``replicas`` replicas of this type."""
        system = dict(
            mode=self.mode, M_total=self.M_total, B=self.max_num_batched_tokens, max_num_seqs=self.max_num_seqs,
            chunked_prefill=self.chunked_prefill, kv_bytes_per_token=self.kv_bytes_per_token,
            tensor_parallel=self.tensor_parallel,
        )
        fields = SystemConfig.model_fields
        if "enable_prefix_caching" in fields:  # explicit, whatever the engine's default
            system["enable_prefix_caching"] = self.enable_prefix_caching
        if self.scheduler:
            system["scheduler"] = self.scheduler
        try:
            system_cfg = SystemConfig(**system)
        except ValidationError as exc:
            raise InputError(format_validation_error(exc, f"candidate {self.key}")) from None
        return Config(
            name=name or f"{plan.name}-{self.key}-x{replicas}", seed=plan.seed, system=system_cfg,
            batch_time=BatchTimeConfig(**self.batch_time.to_dict()),
            policy=plan.policy, cluster=ClusterConfig(replicas=replicas, router=plan.candidates.router),
            sim=SimConfig(record_events=False, snapshot_every=1), fluid=FluidConfig(enabled=False),
        )


def frequency_model(g, base_dir: Path | None = None) -> FrequencyModel:
    """The power/clock model of a plan GPU type: its ``power`` section, else the GPU's preset."""
    if g.power is not None:
        p = g.power
        kw = {"f_max_mhz": p.f_max_mhz, "idle_w": p.idle_w, "peak_w": p.peak_w,
              "memory_activity": p.memory_activity, "exponent": p.exponent, "compute_share": p.compute_share,
              "power_table": None if p.power_table is None else
              tuple((r.clock_mhz, r.compute_w, r.memory_w) for r in p.power_table)}
        if p.gpu is not None:
            return FrequencyModel.preset(p.gpu, **kw)
        return FrequencyModel(**{k: v for k, v in kw.items() if v is not None})
    preset = POWER_PRESET_OF_GPU.get(g.type)
    if preset is None:
        raise InputError(f"candidates.gpus: GPU '{g.type}' has no power preset (presets: "
                         f"{', '.join(GPU_POWER_PRESETS)}); give its power: {{f_max_mhz, idle_w, peak_w}}")
    return FrequencyModel.preset(preset)


def replica_batch_time(g, model, tp: int, base_dir: Path | None = None) -> BatchTimeModel:
    """Step time of ``tp`` GPUs of type ``g`` at their highest clock (see the module docstring)."""
    from fluidserve.calibration.roofline import predict_batch_time

    roof = predict_batch_time(g.type, model, tp)
    if g.batch_time is None:
        return roof
    measured = g.batch_time.model(base_dir)
    if tp == 1:
        return measured
    roof1 = predict_batch_time(g.type, model, 1)
    scaled = COEFFICIENTS + ("d3_prefill_attn_s",)
    return dataclasses.replace(measured, **{
        k: getattr(measured, k) * (getattr(roof, k) / getattr(roof1, k) if getattr(roof1, k, 0.0) > 0 else 1.0)
        for k in scaled if hasattr(measured, k)
    })


def model_spec(plan) -> specs.ModelSpec:
    """The plan's model: a preset name, or a config.json path (relative to the plan file)."""
    m = plan.candidates.model
    path = plan.resolve_path(m)
    try:
        return specs.model(str(path) if path.exists() else m)
    except InputError as exc:
        raise InputError(f"candidates.model: {exc}") from None


def clock_batch_time(fm: FrequencyModel, bt_max: BatchTimeModel, f_mhz: float) -> BatchTimeModel:
    """``bt_max`` at clock ``f_mhz``: :meth:`FrequencyModel.batch_time`, keeping the coefficients it
    does not scale (prefill attention is compute-bound: it takes d1_prefill's factor; MoE is kept)."""
    if f_mhz >= fm.f_max_mhz and not fm.batch_time_table:
        return bt_max
    at_f = fm.batch_time(bt_max, f_mhz)
    factor = at_f.d1_prefill_s / bt_max.d1_prefill_s if bt_max.d1_prefill_s > 0 else 1.0
    return dataclasses.replace(bt_max, **{k: getattr(at_f, k) for k in COEFFICIENTS},
                               d3_prefill_attn_s=bt_max.d3_prefill_attn_s * factor)


def replica_types(plan) -> tuple[list[ReplicaType], list[str]]:
    """Every replica type of the plan's candidate space, and the combinations skipped (with why)."""
    c = plan.candidates
    base = Path(plan.base_dir) if plan.base_dir else None
    model = model_spec(plan)
    s = c.scheduler
    out, skipped = [], []
    for i, g in enumerate(c.gpus):
        fm = frequency_model(g, base)
        clocks = sorted(g.clocks_mhz or [fm.f_max_mhz], reverse=True)
        bad = [f for f in clocks if not 0 < f <= fm.f_max_mhz * (1 + 1e-9)]
        if bad:
            raise InputError(f"candidates.gpus.{i}({g.type}).clocks_mhz: {bad[0]:g} MHz is outside "
                             f"(0, {fm.f_max_mhz:g}] MHz, the GPU's highest clock")
        for tp in c.tensor_parallel:
            if tp > g.count:
                skipped.append(f"{g.type} tp{tp}: only {g.count} GPUs available")
                continue
            try:
                m_total = specs.derive_m_total(g.type, model, g.gpu_memory_utilization, tp)
                bt_max = replica_batch_time(g, model, tp, base)
            except InputError as exc:
                skipped.append(f"{g.type} tp{tp}: {exc}")
                continue
            kvb = specs.kv_bytes_per_token(model, tensor_parallel=tp)
            calib, idle_w = _energy_calibration(g, fm, model, base)
            idle_w *= tp
            for f in clocks:
                bt = clock_batch_time(fm, bt_max, f)
                e = fm.energy_model(bt_max, f)
                energy = BatchTimeModel(**{k: getattr(e, k) * calib[k] * tp for k in COEFFICIENTS})
                for B, S, chunked, prefix, sched in itertools.product(
                    s.max_num_batched_tokens, s.max_num_seqs, s.chunked_prefill, s.enable_prefix_caching,
                    s.scheduler or [None],
                ):
                    if prefix and sched == "vllm_v0":
                        skipped.append(f"{g.type} tp{tp} B{B} S{S}: prefix caching needs the vllm_v1 scheduler")
                        continue
                    out.append(ReplicaType(
                        gpu_type=g.type, tensor_parallel=tp, clock_mhz=float(f), max_num_batched_tokens=B,
                        max_num_seqs=S, chunked_prefill=chunked, enable_prefix_caching=prefix, scheduler=sched,
                        cost_per_hour=g.cost_per_hour * tp, batch_time=bt, energy=energy, idle_w=idle_w,
                        M_total=m_total, kv_bytes_per_token=kvb, gpus_available=g.count, mode=c.mode,
                    ))
    if not out:
        raise InputError("candidates: no replica type is possible (" + "; ".join(skipped) + ")")
    return out, skipped


def _energy_calibration(g, fm: FrequencyModel, model, base: Path | None) -> tuple[dict[str, float], float]:
    """Per coefficient, measured / power-model step energy at tensor_parallel 1 and f_max (1 without a
    measurement), and the idle power of one GPU [W].

    The measured step energy (``energy:``) is of one GPU at tensor_parallel 1; other degrees and
    clocks take the power model's energy times these ratios, so that measurement and model agree
    where the measurement was made and the model supplies the TP and clock responses.
    """
    if g.energy is None:
        return {k: 1.0 for k in COEFFICIENTS}, fm.idle_w
    bt1 = replica_batch_time(g, model, 1, base)
    step_energy = g.energy.model(base, bt1)
    meas = fm.energy_model(bt1, fm.f_max_mhz, step_energy)
    form = fm.energy_model(bt1, fm.f_max_mhz)
    ratio = {k: getattr(meas, k) / getattr(form, k) if getattr(form, k) > 0 else 1.0 for k in COEFFICIENTS}
    return ratio, fm.idle_power_w(step_energy)
