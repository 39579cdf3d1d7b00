"""Parameter sweeps over config fields: spec, executors (local, Dask), Parquet store, JAX vmap path.

``load_sweep(path)`` validates a sweep file and expands its points; ``run_sweep(sweep, ...)``
computes the points not yet stored; ``load_results(dir)`` reads the dataset as one DataFrame.
The command is ``python -m fluidserve sweep`` (:mod:`fluidserve.sweep.cli`).
"""

from fluidserve.sweep.runner import SweepReport, run_sweep
from fluidserve.sweep.spec import Sweep, load_sweep, sweep_from_dict
from fluidserve.sweep.store import load_results

__all__ = ["Sweep", "SweepReport", "load_results", "load_sweep", "run_sweep", "sweep_from_dict"]
