"""PowerMonitor overhead: CPU time of the NVML sampler thread per wall second.

    python bench/power_overhead.py [--seconds 10] [--period-s 0.1] [--gpus 0]
        [--field-sets "all;energy,sm_clock"] [--json]

First times each NVML call behind a reading (wall and CPU time per call, 50 calls each),
then, for each field set, runs the monitor for ``--seconds`` while the main thread sleeps and
reports the sampler thread's CPU time (``time.thread_time`` inside the thread: user + system)
over the wall time: the fraction of one core the monitor costs (goal < 1% at 100 ms). Needs an
NVIDIA GPU and driver (``--fake`` uses a simulated NVML to try the script).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fluidserve.calibration.power import DEFAULT_FIELDS, FIELDS, PowerMonitor


def call_costs(pm: PowerMonitor, n: int = 50) -> dict[str, dict[str, float]]:
    """Mean wall and CPU milliseconds of each NVML call on the first watched GPU."""
    nv, h = pm.nvml, pm._handles[0]
    calls = {
        "nvmlDeviceGetTotalEnergyConsumption": lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h),
        "nvmlDeviceGetPowerUsage": lambda: nv.nvmlDeviceGetPowerUsage(h),
        "nvmlDeviceGetClockInfo(SM)": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
        "nvmlDeviceGetClockInfo(MEM)": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
        "nvmlDeviceGetUtilizationRates": lambda: nv.nvmlDeviceGetUtilizationRates(h),
        "nvmlDeviceGetTemperature": lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
    }
    out = {}
    for name, fn in calls.items():
        fn()
        w0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(n):
            fn()
        out[name] = {"wall_ms": (time.perf_counter() - w0) / n * 1e3, "cpu_ms": (time.thread_time() - c0) / n * 1e3}
    return out


def overhead(gpus: list[int], period_s: float, seconds: float, fields, energy_every: int, nvml) -> dict:
    pm = PowerMonitor(gpus, period_s=period_s, nvml=nvml, fields=fields, energy_every=energy_every)
    w0 = time.perf_counter()
    pm.start()
    time.sleep(seconds)
    pm.stop()
    wall = time.perf_counter() - w0
    return {
        "fields": sorted(pm.fields),
        "energy_every": energy_every,
        "wall_s": wall,
        "num_samples": len(pm.samples),
        "expected_samples": round(wall / period_s) * len(gpus),
        "sampler_cpu_s": pm.sampler_cpu_s,
        "sampler_cpu_fraction_of_core": pm.sampler_cpu_s / wall,
        "avg_power_w": pm.avg_power_w,
        "energy_source": pm.energy_source,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--period-s", type=float, default=0.1)
    ap.add_argument("--gpus", default="0", help="comma-separated NVML indices")
    ap.add_argument("--field-sets", default="default", help="';'-separated sets: 'default', 'all' or comma lists, "
                    "each optionally '@N' to read the energy counter every N ticks (default 10)")
    ap.add_argument("--fake", action="store_true", help="simulated NVML (no GPU needed)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    gpus = [int(g) for g in args.gpus.split(",")]
    nvml = None
    if args.fake:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "calibration"))
        from fake_nvml import FakeNVML

        nvml = FakeNVML(power_w=(300.0,) * (max(gpus) + 1))
    probe = PowerMonitor(gpus, period_s=args.period_s, nvml=nvml)
    result = {"period_s": args.period_s, "gpus": gpus, "gpu_names": probe.gpu_names, "fake_nvml": bool(args.fake),
              "call_costs": call_costs(probe), "runs": []}
    for spec in args.field_sets.split(";"):
        spec = spec.strip()
        names, _, every = spec.partition("@")
        fields = DEFAULT_FIELDS if names == "default" else FIELDS if names == "all" else names.split(",")
        run = overhead(gpus, args.period_s, args.seconds, fields, int(every or 10), nvml)
        result["runs"].append({"set": spec, **run})
    if args.json:
        print(json.dumps(result))
    else:
        for name, c in result["call_costs"].items():
            print(f"{name:>38}: {c['wall_ms']:.3f} ms wall, {c['cpu_ms']:.3f} ms CPU per call")
        for r in result["runs"]:
            print(f"{r['set']:>38}: sampler {100 * r['sampler_cpu_fraction_of_core']:.3f}% of one core "
                  f"({r['num_samples']} samples in {r['wall_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
