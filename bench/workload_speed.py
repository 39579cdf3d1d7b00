"""Workload generation and trace loading speed (one run, printed; not a test).

    python bench/workload_speed.py [--n 1000000]

Prints seconds and requests per second for: each synthetic scenario/arrival process, and
loading an n-row Azure-format and generic CSV built from the shipped Azure trace (with the
vectorized row checks of fluidserve.workload.traces).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fluidserve.errors import InputError
from fluidserve.workload import AZURE_CONV_SAMPLE, read_trace, synthetic_workload, write_requests_csv


def timed(label: str, n: int, fn):
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    print(f"{label:<40} {n:>9,d} requests  {dt:7.3f} s  {n / dt:>13,.0f} req/s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    n = ap.parse_args().n
    for scenario, process in (("normal", "poisson"), ("heavy", "gamma"), ("bursty", "poisson"), ("normal", "mmpp")):
        timed(f"synthetic {scenario}/{process}", n,
              lambda: synthetic_workload(scenario, n, seed=1, arrival_process=process))
    base = pd.read_csv(AZURE_CONV_SAMPLE)
    reps = -(-n // len(base))
    big = pd.concat([base] * reps, ignore_index=True).iloc[:n]
    with tempfile.TemporaryDirectory() as tmp:
        azure = Path(tmp) / "azure.csv"
        big.to_csv(azure, index=False)
        w = timed("load azure CSV (ISO timestamps)", n, lambda: read_trace(azure, "azure").workload)
        generic = Path(tmp) / "generic.csv"
        write_requests_csv(synthetic_workload("normal", n, seed=2), generic)
        timed("load generic CSV", n, lambda: read_trace(generic, "generic").workload)
        text = generic.read_text().splitlines()
        text[n - 10] = text[n - 10].replace(",", ",x", 1)  # a bad value near the end
        generic.write_text("\n".join(text) + "\n")
        t0 = time.perf_counter()
        try:
            read_trace(generic, "generic")
        except InputError as exc:
            label = "reject generic CSV, bad row near end"
            print(f"{label:<40} {n:>9,d} requests  {time.perf_counter() - t0:7.3f} s  ({exc})")
    assert len(w) == n and np.all(w.decode_tokens >= 1)


if __name__ == "__main__":
    main()
