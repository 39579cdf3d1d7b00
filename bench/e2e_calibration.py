"""End-to-end calibration through the simulated endpoint: how well the fit recovers the truth.

    .venv/bin/python bench/e2e_calibration.py [--requests 100] [--time-scale 0.25] [--seed 1]

Starts ``fluidserve serve`` with known coefficients, drives it with the calibration load client,
builds a step profile from the client's token receive times and fits it
(:func:`fluidserve.serve.e2e.run_e2e`). Prints the relative error of each coefficient and the
machine's load average: the token times are wall-clock measurements, so the result depends on
how quiet the machine is (on a quiet 2-core machine every coefficient was within 10% at 100
requests and time scale 0.25; with two CPU hogs beside it the profile was unusable). This was
``tests/serve/test_e2e.py``'s accuracy assertion; it lives here because no test may depend on
wall-clock speed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import psutil

from fluidserve.batch_time import BatchTimeModel
from fluidserve.serve.e2e import calibration_workload, run_e2e

TRUTH = BatchTimeModel(d0_s=0.008, d1_prefill_s=4.0e-5, d1_decode_s=3.0e-4, d2_kv_s=5.0e-7)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--time-scale", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"{psutil.cpu_count()} CPUs, load average {psutil.getloadavg()[0]:.2f}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_e2e(TRUTH, calibration_workload(args.requests, seed=args.seed), time_scale=args.time_scale,
                         workdir=tmp)
    s = result.summary()
    print(f"{'coefficient':<14}{'truth':>12}{'fitted':>12}{'rel. error':>12}")
    for k, err in s["rel_error"].items():
        print(f"{k:<14}{s['truth'][k]:>12.4g}{s['fitted'][k]:>12.4g}{err:>+11.2%}")
    print(f"{s['profile_rows']} steps ({s['profile_phases']}) from {s['requests']} requests, {s['errors']} errors; "
          f"max |rel. error| {s['max_abs_rel_error']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
