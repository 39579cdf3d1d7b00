"""Serving presets: the hardware-level efficiencies of a GPU under vLLM, fitted on real runs.

A preset holds :class:`fluidserve.calibration.roofline.Efficiency` (fractions of datasheet peaks,
per-step / per-layer / per-all-reduce overheads) plus ``request_overhead_s``, the serving stack's
fixed cost per request outside the engine steps (HTTP, tokenization, detokenization, streaming),
added to TTFT and E2E, and ``first_token_lag_steps``, how many engine steps after the prefill step
the first streamed text reaches the client (vLLM's incremental detokenizer holds back text until
it decodes to whole characters; the engine core picks up new requests between steps). Because none of these depend on the model, one preset predicts any model
on that GPU: :meth:`ServingPreset.batch_time` derives the model's :class:`BatchTimeModel`.

``fluidserve/data/vllm_presets/<GPU>.yaml`` are the shipped presets (``calibrate from-runs``
wrote them; their ``provenance`` names the runs and the fit); :func:`default_preset` picks the
GPU's, else the roofline defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fluidserve import specs
from fluidserve.batch_time import BatchTimeModel
from fluidserve.calibration.roofline import Efficiency, predict
from fluidserve.errors import InputError

PRESET_DIR = Path(__file__).resolve().parent.parent / "data" / "vllm_presets"

#: efficiencies that ``calibrate from-runs`` holds fixed for vLLM unless told otherwise: vLLM
#: replays decode steps as CUDA graphs, so kernels do not pay a launch gap per layer
#: (``layer_overhead_s`` 0), and tensor-parallel all-reduces of a decode step's few KB use its
#: custom one-shot all-reduce over NVLink, of the order of 5 us (the all-reduce latency the roofline
#: default assumes, 10 us, is NCCL's). KV reads share the weights' bandwidth fraction: fixing them at
#: the 0.77 that PyTorch's attention reached in ``calibration/data/h100_llama31_8b_profile.csv``
#: doubled the fit's rms log error on the development runs (vLLM's paged kernels read faster).
VLLM_FIXED = {"layer_overhead_s": 0.0, "all_reduce_latency_s": 5e-6}


@dataclass(frozen=True)
class ServingPreset:
    """Efficiencies of a GPU under a serving stack, and where they come from."""

    gpu: str
    efficiency: Efficiency = Efficiency()
    request_overhead_s: float = 0.0
    first_token_lag_steps: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)

    def batch_time(self, model: str | specs.ModelSpec, tensor_parallel: int = 1) -> BatchTimeModel:
        """The step-time model of ``model`` on ``tensor_parallel`` of this GPU."""
        return predict(self.gpu, model, tensor_parallel, self.efficiency).batch_time

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "efficiency": asdict(self.efficiency),
                "request_overhead_s": self.request_overhead_s, "first_token_lag_steps": self.first_token_lag_steps,
                "provenance": self.provenance}

    def write(self, path: str | Path) -> Path:
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def read_preset(path: str | Path, gpu: str | None = None) -> ServingPreset:
    """Read a serving preset YAML (``calibrate from-runs --out``)."""
    from fluidserve.yamlio import read_yaml

    data = read_yaml(path, "serving preset")
    if not isinstance(data, dict) or "efficiency" not in data:
        raise InputError(f"{path}: not a serving preset (no 'efficiency' mapping); batch-time presets "
                         "(d0_s, ...) describe one model only")
    known = {f.name for f in fields(Efficiency)}
    eff = data["efficiency"] or {}
    bad = sorted(set(eff) - known)
    if bad:
        raise InputError(f"{path}: unknown efficiency field(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
    try:
        efficiency = Efficiency(**{k: (None if v is None else float(v)) for k, v in eff.items()})
        overhead = float(data.get("request_overhead_s", 0.0))
        lag = float(data.get("first_token_lag_steps", 0.0))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: efficiency fields must be numbers ({exc})") from None
    return ServingPreset(gpu=specs.gpu(gpu or data.get("gpu")).name, efficiency=efficiency,
                         request_overhead_s=overhead, first_token_lag_steps=lag,
                         provenance=data.get("provenance") or {})


def vllm_start_preset(gpu: str) -> ServingPreset:
    """Roofline default efficiencies with :data:`VLLM_FIXED`: where ``calibrate from-runs`` starts."""
    return ServingPreset(gpu=specs.gpu(gpu).name, efficiency=replace(Efficiency(), **VLLM_FIXED),
                         provenance={"kind": "roofline defaults with vLLM's CUDA-graph / custom all-reduce overheads"})


def default_preset(gpu: str) -> ServingPreset:
    """The shipped vLLM preset of ``gpu`` if there is one, else the roofline's default efficiencies."""
    name = specs.gpu(gpu).name
    path = PRESET_DIR / f"{name}.yaml"
    if path.is_file():
        return read_preset(path, name)
    return ServingPreset(gpu=name, provenance={"kind": "roofline defaults (no fitted preset for this GPU)"})
