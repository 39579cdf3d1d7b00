"""GPU power and energy over NVML: a background sampler and an energy meter for code blocks.

``PowerMonitor`` samples, every ``period_s`` seconds and for each GPU index, the board power
(W), SM and memory clocks (MHz), GPU and memory utilization (%), temperature (C) and the
total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since driver load). Energy
of a block is the counter's difference between ``start()`` and ``stop()``, which is more
accurate than integrating sampled power; where a GPU has no counter (pre-Volta) the sampled
power is integrated instead and ``energy_source`` says so.

    with PowerMonitor(gpu_indices=[0]) as pm:
        run_workload()
    print(pm.energy_j, pm.avg_power_w, pm.samples)

The NVML module is injectable (``nvml=``) so tests drive the monitor with a fake. Nothing here
changes clocks or power limits: it only reads.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from fluidserve.errors import InputError, MissingDependencyError, cli_errors, require
from fluidserve.jsonout import to_json

SAMPLE_COLUMNS = [
    "time_s", "gpu", "power_w", "energy_j", "sm_clock_mhz", "mem_clock_mhz",
    "gpu_util_pct", "mem_util_pct", "temperature_c",
]

# reading -> the NVML call(s) behind it
FIELDS = ("power", "energy", "sm_clock", "mem_clock", "utilization", "temperature")
DEFAULT_FIELDS = FIELDS


def load_nvml(nvml: Any = None) -> Any:
    """The NVML module (``pynvml`` unless one is given), initialised; one clear error otherwise."""
    if nvml is None:
        nvml = require("pynvml", "calib")
    try:
        nvml.nvmlInit()
    except Exception as exc:  # pynvml raises NVMLError subclasses (library not found, driver not loaded)
        raise MissingDependencyError(
            f"NVML is not available ({type(exc).__name__}: {exc}); PowerMonitor needs an NVIDIA GPU and driver"
        ) from exc
    return nvml


class PowerMonitor:
    """Background NVML sampler with energy accounting for one or several GPUs.

    Args:
        gpu_indices: NVML device indices to watch (an int or a sequence of ints).
        period_s: sampling period in seconds (default 0.1).
        nvml: an NVML module with pynvml's function names; default: ``pynvml``.
        fields: which readings each tick takes (FIELDS); the others are NaN in ``samples``.
            Energy accounting uses the counter read at start()/stop() whatever the fields.
        energy_every: read the energy counter into the trace every this many ticks (NaN on
            the others). On an H100 one counter read costs ~4 ms of CPU while every other
            reading costs ~1 us, so reading it every tick at 100 ms would cost ~4% of a core.

    After ``stop()`` (or leaving the ``with`` block): ``energy_j``, ``avg_power_w``,
    ``energy_j_per_gpu``, ``avg_power_w_per_gpu``, ``duration_s``, ``samples`` (a DataFrame
    with SAMPLE_COLUMNS; ``time_s`` counts from ``start()``) and ``sampler_cpu_s`` (CPU time
    the sampling thread used, to bound the monitor's overhead).
    """

    def __init__(
        self,
        gpu_indices: int | Sequence[int] = 0,
        period_s: float = 0.1,
        nvml: Any = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
        energy_every: int = 10,
    ):
        bad_fields = sorted(set(fields) - set(FIELDS))
        if bad_fields:
            raise InputError(f"PowerMonitor: unknown field '{bad_fields[0]}'; choose from {', '.join(FIELDS)}")
        self.fields = frozenset(fields)
        if int(energy_every) < 1:
            raise InputError(f"PowerMonitor: energy_every must be >= 1 tick, got {energy_every!r}")
        self.energy_every = int(energy_every)
        indices = [gpu_indices] if isinstance(gpu_indices, (int, np.integer)) else list(gpu_indices)
        if not indices:
            raise InputError("PowerMonitor: gpu_indices is empty; give at least one GPU index")
        if not (np.isfinite(period_s) and period_s > 0):
            raise InputError(f"PowerMonitor: period_s must be > 0 seconds, got {period_s!r}")
        self.period_s = float(period_s)
        self.nvml = load_nvml(nvml)
        count = int(self.nvml.nvmlDeviceGetCount())
        bad = [i for i in indices if not 0 <= int(i) < count]
        if bad:
            raise InputError(f"PowerMonitor: GPU index {bad[0]} out of range; NVML sees {count} GPU(s)")
        self.gpu_indices = [int(i) for i in indices]
        self._handles = [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in self.gpu_indices]
        self.gpu_names = [_as_str(self.nvml.nvmlDeviceGetName(h)) for h in self._handles]
        self._has_counter = [self._counter_supported(h) for h in self._handles]
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._t1 = None
        self._e0: list[float | None] = []
        self._e1: list[float | None] = []
        self.sampler_cpu_s = 0.0

    # -- reading ---------------------------------------------------------------------------

    def _counter_supported(self, handle) -> bool:
        try:
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return True
        except Exception:
            return False

    def energy_counter_j(self) -> list[float | None]:
        """The total-energy counter of each watched GPU now, in joules (None where unsupported)."""
        return [
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3 if ok else None
            for h, ok in zip(self._handles, self._has_counter)
        ]

    def read(self, gpu_position: int = 0) -> dict[str, float]:
        """One instantaneous reading of the GPU at ``gpu_positions[gpu_position]`` (SAMPLE_COLUMNS)."""
        return dict(zip(SAMPLE_COLUMNS, self._sample(gpu_position, time.perf_counter(), with_energy=True)))

    def _sample(self, k: int, now: float, with_energy: bool) -> tuple:
        nv, h, f = self.nvml, self._handles[k], self.fields
        nan = np.nan
        read_energy = with_energy and "energy" in f and self._has_counter[k]
        energy = nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3 if read_energy else nan
        util = nv.nvmlDeviceGetUtilizationRates(h) if "utilization" in f else None
        t0 = self._t0 if self._t0 is not None else now
        return (
            now - t0,
            self.gpu_indices[k],
            nv.nvmlDeviceGetPowerUsage(h) / 1e3 if "power" in f else nan,
            energy,
            float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)) if "sm_clock" in f else nan,
            float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)) if "mem_clock" in f else nan,
            float(util.gpu) if util is not None else nan,
            float(util.memory) if util is not None else nan,
            float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)) if "temperature" in f else nan,
        )

    def _loop(self) -> None:
        cpu0 = time.thread_time()
        next_t = time.perf_counter()
        tick = 0
        while True:
            now = time.perf_counter()
            with_energy = tick % self.energy_every == 0
            rows = [self._sample(k, now, with_energy) for k in range(len(self._handles))]
            tick += 1
            with self._lock:
                self._rows.extend(rows)
            next_t += self.period_s
            delay = next_t - time.perf_counter()
            if delay < 0:  # fell behind (slow NVML call): skip missed ticks, keep the grid
                next_t += -delay // self.period_s * self.period_s + self.period_s
                delay = next_t - time.perf_counter()
            if self._stop.wait(max(delay, 0.0)):
                break
        self.sampler_cpu_s = time.thread_time() - cpu0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "PowerMonitor":
        if self._thread is not None:
            raise RuntimeError("PowerMonitor already started")
        self._rows = []
        self._stop.clear()
        self._t0 = time.perf_counter()
        self._e0 = self.energy_counter_j()
        self._thread = threading.Thread(target=self._loop, name="fluidserve-power", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "PowerMonitor":
        if self._thread is None:
            raise RuntimeError("PowerMonitor.stop() before start()")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._e1 = self.energy_counter_j()
        self._t1 = time.perf_counter()
        return self

    def close(self) -> None:
        """Release NVML (after this the monitor cannot be started again)."""
        try:
            self.nvml.nvmlShutdown()
        except Exception:  # shutdown errors must not hide the measurement
            pass

    def __enter__(self) -> "PowerMonitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.close()

    def measure(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run ``fn(*args, **kwargs)`` between start() and stop(); returns fn's result."""
        self.start()
        try:
            return fn(*args, **kwargs)
        finally:
            self.stop()

    # -- results ---------------------------------------------------------------------------

    @property
    def samples(self) -> pd.DataFrame:
        """All samples so far (also while running), one row per GPU per tick."""
        with self._lock:
            rows = list(self._rows)
        return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)

    def samples_between(self, t0_s: float, t1_s: float) -> pd.DataFrame:
        """Samples with ``t0_s <= time_s <= t1_s`` (times relative to start())."""
        df = self.samples
        return df[(df["time_s"] >= t0_s) & (df["time_s"] <= t1_s)]

    def elapsed_s(self) -> float:
        """Seconds since start() on the monitor's clock (for samples_between windows)."""
        if self._t0 is None:
            raise RuntimeError("PowerMonitor not started")
        return time.perf_counter() - self._t0

    @property
    def duration_s(self) -> float:
        if self._t0 is None or self._t1 is None:
            raise RuntimeError("PowerMonitor has not been stopped yet")
        return self._t1 - self._t0

    @property
    def energy_source(self) -> str:
        """'counter' when every GPU has the total-energy counter, else 'integrated-power'."""
        return "counter" if all(self._has_counter) else "integrated-power"

    @property
    def energy_j_per_gpu(self) -> dict[int, float]:
        """Energy of each GPU between start() and stop(), in joules."""
        self.duration_s  # raises when not stopped
        out = {}
        df = self.samples
        for k, gpu in enumerate(self.gpu_indices):
            if self._has_counter[k]:
                out[gpu] = float(self._e1[k] - self._e0[k])
            else:
                s = df[df["gpu"] == gpu]
                t = np.concatenate([[0.0], s["time_s"].to_numpy(), [self.duration_s]])
                p = s["power_w"].to_numpy()
                p = np.concatenate([[p[0]], p, [p[-1]]]) if len(p) else np.zeros(2)
                out[gpu] = float(np.trapezoid(p, t)) if hasattr(np, "trapezoid") else float(np.trapz(p, t))
        return out

    @property
    def energy_j(self) -> float:
        """Energy of all watched GPUs together between start() and stop(), in joules."""
        return float(sum(self.energy_j_per_gpu.values()))

    @property
    def avg_power_w_per_gpu(self) -> dict[int, float]:
        return {g: e / self.duration_s for g, e in self.energy_j_per_gpu.items()}

    @property
    def avg_power_w(self) -> float:
        """Average power of all watched GPUs together (energy / duration), in watts."""
        return self.energy_j / self.duration_s

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary of the measurement."""
        df = self.samples
        per_gpu = []
        for k, gpu in enumerate(self.gpu_indices):
            s = df[df["gpu"] == gpu]
            per_gpu.append({
                "gpu": gpu,
                "name": self.gpu_names[k],
                "energy_j": self.energy_j_per_gpu[gpu],
                "avg_power_w": self.avg_power_w_per_gpu[gpu],
                "max_power_w": float(s["power_w"].max()) if len(s) else None,
                "mean_sm_clock_mhz": float(s["sm_clock_mhz"].mean()) if len(s) else None,
                "max_temperature_c": float(s["temperature_c"].max()) if len(s) else None,
            })
        return {
            "duration_s": self.duration_s,
            "period_s": self.period_s,
            "num_samples": int(len(df)),
            "energy_j": self.energy_j,
            "avg_power_w": self.avg_power_w,
            "energy_source": self.energy_source,
            "sampler_cpu_s": self.sampler_cpu_s,
            "sampler_cpu_fraction": self.sampler_cpu_s / self.duration_s,
            "gpus": per_gpu,
        }

    def to_csv(self, path: str | Path) -> Path:
        """Write the samples (SAMPLE_COLUMNS) as CSV; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.samples.to_csv(path, index=False)
        return path

    def to_json(self, path: str | Path) -> Path:
        """Write summary() as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- CLI: python -m fluidserve calibrate power ------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--gpus", default="0", help="comma-separated NVML GPU indices")
    parser.add_argument("--period-s", type=float, default=0.1, help="sampling period, seconds")
    parser.add_argument("--energy-every", type=int, default=10, help="trace the energy counter every N ticks")
    parser.add_argument("--duration-s", type=float, help="sample for this long (instead of running a command)")
    parser.add_argument("--output-dir", required=True, help="directory for power_trace.csv and power.json")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    parser.add_argument("cmd", nargs="*", help="command to meter (after --), e.g. -- python train.py")


@cli_errors
def main(args) -> int:
    import subprocess

    try:
        gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
    except ValueError:
        raise InputError(f"--gpus: expected comma-separated GPU indices, got '{args.gpus}'") from None
    if bool(args.cmd) == (args.duration_s is not None):
        raise InputError("give either --duration-s SECONDS or a command to meter after --")
    if args.duration_s is not None and not args.duration_s > 0:
        raise InputError(f"--duration-s must be > 0, got {args.duration_s}")
    pm = PowerMonitor(gpus, period_s=args.period_s, energy_every=args.energy_every)
    rc = 0
    with pm:
        if args.cmd:
            rc = subprocess.call(args.cmd)
        else:
            time.sleep(args.duration_s)
    out = Path(args.output_dir)
    pm.to_csv(out / "power_trace.csv")
    pm.to_json(out / "power.json")
    summary = {**pm.summary(), "command_rc": rc if args.cmd else None, "output_dir": str(out)}
    if args.json:
        print(to_json(summary))
    else:
        print(f"{pm.energy_j:.1f} J over {pm.duration_s:.2f} s (avg {pm.avg_power_w:.1f} W); wrote {out}")
    return rc
