"""fluidserve: analytical (fluid ODE) modeling of LLM serving.

Data flows one way: config -> workload -> (fluid | sim | lp) -> results -> figures/tables.
Heavy dependencies (jax, ortools, pynvml, vllm, fastapi) are imported lazily by the
modules that need them, so ``import fluidserve`` never fails because an extra is missing.
"""

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import FluidserveError, InputError, MissingDependencyError

__all__ = ["BatchTimeModel", "FluidserveError", "InputError", "MissingDependencyError", "__version__"]
__version__ = "0.1.0"
