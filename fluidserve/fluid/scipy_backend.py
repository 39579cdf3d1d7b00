"""SciPy backend: ``solve_ivp`` on the shared vector field (numpy namespace)."""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from fluidserve.fluid.params import FluidParams
from fluidserve.fluid.vector_field import vector_field


class ScipyIntegrator:
    """Integrates one segment [t0, t1] and returns the states at ``t_eval``.

    ``method`` is any solve_ivp method; the default LSODA switches to a stiff (BDF) method
    when the relaxation terms (rate 1/tau) make the problem stiff.
    """

    name = "scipy"

    def __init__(self, params: FluidParams, method: str = "LSODA", rtol: float = 1e-6, atol: float = 1e-8):
        self.params = params
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.nfev = 0
        self.fallbacks = 0

    def integrate(self, y0: np.ndarray, t0: float, t1: float, t_eval: np.ndarray) -> np.ndarray:
        p = self.params
        sol = solve_ivp(
            lambda t, y: vector_field(t, y, p, np), (t0, t1), y0, method=self.method, t_eval=t_eval,
            rtol=self.rtol, atol=self.atol,
        )
        if not sol.success and self.method != "LSODA":
            # an explicit method can stall where the flows switch regime (memory boundary);
            # LSODA switches to BDF there. Same equations, same tolerances; counted in `fallbacks`.
            self.fallbacks += 1
            sol = solve_ivp(
                lambda t, y: vector_field(t, y, p, np), (t0, t1), y0, method="LSODA", t_eval=t_eval,
                rtol=self.rtol, atol=self.atol,
            )
        if not sol.success:
            raise RuntimeError(f"fluid solve_ivp ({self.method}) failed on [{t0:g}, {t1:g}] s: {sol.message}")
        self.nfev += sol.nfev
        return sol.y.T
