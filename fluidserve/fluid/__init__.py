"""The fluid (ODE) model: K request classes, age-structured running / swapped mass, two backends.

``solve(cfg, workload)`` returns a :class:`FluidResult`; equations in ``theory/fluid_model.tex``.
JAX (diffrax) is imported only by the jax backend.
"""

from fluidserve.fluid.result import FluidResult
from fluidserve.fluid.solve import solve

__all__ = ["FluidResult", "solve"]
