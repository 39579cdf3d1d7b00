"""The routing / clock / GPU-count program over the fluid steady state (OR-Tools).

Variables (see :mod:`fluidserve.policy.problem` for sub-pools and arcs):

* ``x[a] >= 0``  rate of class k(a) sent to sub-pool s(a) [req/s];
* ``y[s] >= 0``  replicas of pool j(s) locked at clock f(s) serving SLO group g(s) (integer with
  ``integer=True``, solved with SCIP; continuous otherwise, solved with GLOP);
* ``z[j] >= 0``  idle replicas of pool j (no traffic, idle power; releasable for the cost objective).

Constraints:

* demand     sum_s x[k, s] = lambda_k  (x alpha for the throughput objective)
* fleet      sum_s y[j, s] + z[j] = count_j
* util       sum_k E[work_k(f)] x[k, s] <= rho_cap[s] y[s]           (rho < 1, TPOT/TTFT SLOs)
* kv         tau_cap[s] sum_k E[KV token-steps_k] x[k, s] <= kv_fraction M_total y[s]
* tokens     tau_cap[s] sum_k E[P_k + D_k] x[k, s] <= budget_fraction B y[s]
* seqs       tau_cap[s] sum_k E[D_k] x[k, s] <= seq_fraction max_num_seqs y[s]
* tbt        sum_k E[(d1_prefill P_k)^2] x[k, s] <= tbt_cap[s] y[s]   (prefill interference in TPOT)

Power of a busy replica is ``(1 - rho) E0/d0 + sum_k lambda_k E[energy_k]`` (steps of length
tau = d0/(1-rho) each cost E0 plus their tokens' energy), linear in (x, y):
``P = sum_s busy_base_w[s] y[s] + sum_a energy_net[a] x[a] + sum_j idle_w[j] z[j]``.

Objectives: ``energy`` minimizes P (= energy per token x the fixed token rate); ``cost`` minimizes
$/h of non-idle GPUs, then power; ``throughput`` maximizes alpha, then minimizes power.

Infeasible inputs are diagnosed with an elastic program (a slack ``u_k`` of unserved rate per
class, minimizing the unserved share) whose binding constraints and duals name what cannot be
met. Duals of the final program (with integer GPU counts fixed, when integer) are reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fluidserve.errors import require
from fluidserve.policy.problem import Problem

_INF = float("inf")
MIP_TIME_LIMIT_S = 60.0  # SCIP stops here with its best integer solution (reported as not proven optimal)


@dataclass
class LpSolution:
    """A solved (or diagnosed infeasible) program.

    ``x``/``y``/``idle`` are the decision values; ``duals`` holds one row per constraint with its
    shadow price (objective change per unit increase of the right-hand side), slack and whether it
    binds; ``violations`` explain an infeasible input; ``power_w`` is the LP-predicted power.
    """

    status: str
    objective: str
    problem: Problem
    x: np.ndarray
    y: np.ndarray
    idle: np.ndarray
    alpha: float = 1.0
    objective_value: float = float("nan")
    power_w: float = float("nan")
    cost_per_hour: float = float("nan")
    duals: pd.DataFrame = field(default_factory=pd.DataFrame)
    relaxation_duals: pd.DataFrame = field(default_factory=pd.DataFrame)
    violations: list[str] = field(default_factory=list)
    unserved: np.ndarray | None = None
    solve_time_s: float = 0.0
    size: dict = field(default_factory=dict)
    integer: bool = False

    @property
    def feasible(self) -> bool:
        return self.status == "optimal"

    @property
    def energy_per_token_j(self) -> float:
        return self.power_w / (self.alpha * self.problem.tokens_per_s)


class _Model:
    """One pywraplp model of the program (built once, re-solved with different settings)."""

    def __init__(self, pb: Problem, backend: str, integer: bool, elastic: bool, throughput: bool,
                 fixed_y: np.ndarray | None = None):
        pywraplp = require("ortools.linear_solver.pywraplp", "lp")
        self.pb = pb
        self.solver = pywraplp.Solver.CreateSolver(backend)
        if self.solver is None:  # pragma: no cover - depends on the OR-Tools build
            raise RuntimeError(f"OR-Tools solver backend {backend} is unavailable")
        self.pywraplp = pywraplp
        sv = self.solver
        self.proven_optimal = True
        if integer and fixed_y is None:
            sv.SetTimeLimit(int(MIP_TIME_LIMIT_S * 1000))
        S, A, J, K = pb.num_subpools, pb.num_arcs, len(pb.pool_names), len(pb.class_names)
        self.x = [sv.NumVar(0.0, _INF, "") for _ in range(A)]
        if fixed_y is not None:
            self.y = [sv.NumVar(float(v), float(v), "") for v in fixed_y]
        else:
            make = sv.IntVar if integer else sv.NumVar
            self.y = [make(0.0, float(pb.pool_count[pb.s_pool[s]]), "") for s in range(S)]
        self.z = [sv.NumVar(0.0, float(pb.pool_count[j]), "") for j in range(J)]
        self.alpha = sv.NumVar(0.0, _INF, "alpha") if throughput else None
        self.u = [sv.NumVar(0.0, float(pb.rate[k]), "") for k in range(K)] if elastic else None

        self.rows: list[tuple[str, str, int, object]] = []  # (kind, label, index, constraint)
        self.demand = []
        for k in range(K):
            if throughput:
                c = sv.Constraint(0.0, 0.0)
                c.SetCoefficient(self.alpha, -float(pb.rate[k]))
            else:
                c = sv.Constraint(float(pb.rate[k]), float(pb.rate[k]))
            if elastic:
                c.SetCoefficient(self.u[k], 1.0)
            self.demand.append(c)
            self.rows.append(("demand", f"class '{pb.class_names[k]}'", k, c))
        self.fleet = []
        for j in range(J):
            c = sv.Constraint(float(pb.pool_count[j]), float(pb.pool_count[j]))
            c.SetCoefficient(self.z[j], 1.0)
            self.fleet.append(c)
            self.rows.append(("fleet", f"pool '{pb.pool_names[j]}' GPU count {int(pb.pool_count[j])}", j, c))
        # fleet coefficients of y
        for s in range(S):
            self.fleet[pb.s_pool[s]].SetCoefficient(self.y[s], 1.0)
        self.util, self.kv, self.tok, self.seq, self.tbt = [], [], [], [], []
        for s in range(S):
            lab = self._sub_label(s)
            for kind, store, cap in (
                ("util", self.util, pb.s_rho_cap[s]),
                ("kv", self.kv, pb.s_kv_cap[s]),
                ("tokens", self.tok, pb.s_tok_cap[s]),
                ("seqs", self.seq, pb.s_seq_cap[s]),
                ("tbt", self.tbt, pb.s_tbt_cap[s]),
            ):
                if not np.isfinite(cap):
                    store.append(None)
                    continue
                c = sv.Constraint(-_INF, 0.0)
                c.SetCoefficient(self.y[s], -float(cap))
                store.append(c)
                self.rows.append((kind, lab, s, c))
        tau = pb.s_tau_cap
        for a in range(A):
            s, k, xa = int(pb.a_sub[a]), int(pb.a_class[a]), self.x[a]
            self.demand[k].SetCoefficient(xa, 1.0)
            self.util[s].SetCoefficient(xa, float(pb.a_work[a]))
            self.kv[s].SetCoefficient(xa, float(tau[s] * pb.a_kv[a]))
            self.tok[s].SetCoefficient(xa, float(tau[s] * pb.a_tokens[a]))
            self.seq[s].SetCoefficient(xa, float(tau[s] * pb.a_decode[a]))
            if self.tbt[s] is not None:
                self.tbt[s].SetCoefficient(xa, float(pb.a_x2[a]))
        self.size = {
            "variables": sv.NumVariables(), "constraints": sv.NumConstraints(), "arcs": A, "subpools": S,
            "pools": J, "classes": K, "integer_variables": S if (integer and fixed_y is None) else 0,
        }

    def _sub_label(self, s: int) -> str:
        pb = self.pb
        ttft, tpot = pb.groups[pb.s_group[s]]
        return (f"pool '{pb.pool_names[pb.s_pool[s]]}' at {pb.s_clock[s]:g} MHz, SLO group "
                f"(TTFT {ttft:g} s, TPOT {tpot:g} s)")

    # --------------------------------------------------------------- objectives
    def set_power_objective(self, scale: float = 1.0, extra=None) -> None:
        pb = self.pb
        obj = self.solver.Objective()
        obj.Clear()
        for s in range(pb.num_subpools):
            obj.SetCoefficient(self.y[s], scale * float(pb.s_busy_base_w[s]))
        for a in range(pb.num_arcs):
            obj.SetCoefficient(self.x[a], scale * float(pb.a_energy_net[a]))
        for j in range(len(pb.pool_names)):
            obj.SetCoefficient(self.z[j], scale * float(pb.pool_idle_w[j]))
        obj.SetMinimization()

    def set_cost_objective(self) -> None:
        pb = self.pb
        obj = self.solver.Objective()
        obj.Clear()
        for s in range(pb.num_subpools):
            obj.SetCoefficient(self.y[s], float(pb.pool_cost_per_hour[pb.s_pool[s]]))
        obj.SetMinimization()

    def set_unserved_objective(self) -> None:
        obj = self.solver.Objective()
        obj.Clear()
        for k, u in enumerate(self.u):
            obj.SetCoefficient(u, 1.0 / float(self.pb.rate[k]))
        obj.SetMinimization()

    def set_alpha_objective(self) -> None:
        obj = self.solver.Objective()
        obj.Clear()
        obj.SetCoefficient(self.alpha, 1.0)
        obj.SetMaximization()

    def add_cost_cap(self, value: float) -> None:
        pb = self.pb
        c = self.solver.Constraint(-_INF, value * (1 + 1e-7) + 1e-9)
        for s in range(pb.num_subpools):
            c.SetCoefficient(self.y[s], float(pb.pool_cost_per_hour[pb.s_pool[s]]))

    def add_alpha_floor(self, value: float) -> None:
        self.alpha.SetLb(value * (1 - 1e-7))

    def solve(self) -> str:
        st = self.solver.Solve()
        p = self.pywraplp.Solver
        if st in (p.OPTIMAL, p.FEASIBLE):
            self.proven_optimal = self.proven_optimal and st == p.OPTIMAL
            return "optimal"
        if st == p.INFEASIBLE:
            return "infeasible"
        if st == p.UNBOUNDED:
            return "unbounded"
        return f"error ({st})"

    def values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.array([v.solution_value() for v in self.x]),
            np.array([v.solution_value() for v in self.y]),
            np.array([v.solution_value() for v in self.z]),
        )

    def dual_table(self) -> pd.DataFrame:
        """One row per constraint: kind, label, shadow price, slack, binding (LP backends only)."""
        rows = []
        xv, yv, zv = self.values()
        for kind, label, i, c in self.rows:
            rows.append((kind, label, i, c.dual_value(), c.lb(), c.ub()))
        df = pd.DataFrame(rows, columns=["kind", "constraint", "index", "shadow_price", "lb", "ub"])
        # activities, to compute slacks (vectorized over arcs)
        pb = self.pb
        S, K, J = pb.num_subpools, len(pb.class_names), len(pb.pool_names)
        demand_act = np.bincount(pb.a_class, weights=xv, minlength=K)
        if self.u:
            demand_act = demand_act + np.array([u.solution_value() for u in self.u])
        if self.alpha is not None:
            demand_act = demand_act - self.alpha.solution_value() * pb.rate
        fleet_act = np.bincount(pb.s_pool, weights=yv, minlength=J) + zv

        def sub_act(coef, cap):
            return np.bincount(pb.a_sub, weights=coef * xv, minlength=S) - cap * yv

        tau_a = pb.s_tau_cap[pb.a_sub]
        sub = {
            "util": sub_act(pb.a_work, pb.s_rho_cap),
            "kv": sub_act(tau_a * pb.a_kv, pb.s_kv_cap),
            "tokens": sub_act(tau_a * pb.a_tokens, pb.s_tok_cap),
            "seqs": sub_act(tau_a * pb.a_decode, pb.s_seq_cap),
            "tbt": sub_act(pb.a_x2, np.where(np.isfinite(pb.s_tbt_cap), pb.s_tbt_cap, 0.0)),
        }
        act_vals = np.array([
            demand_act[i] if kind == "demand" else fleet_act[i] if kind == "fleet" else sub[kind][i]
            for kind, _, i, _ in self.rows
        ])
        df["activity"] = act_vals
        df["slack"] = np.minimum(df["ub"] - df["activity"], df["activity"] - df["lb"])
        scale = max(1.0, float(np.abs(df["shadow_price"]).max()) if len(df) else 1.0)
        df["binding"] = (df["slack"].abs() <= 1e-7 * np.maximum(1.0, df["ub"].abs().replace(np.inf, 1.0))) & (
            df["shadow_price"].abs() > 1e-9 * scale
        )
        # a sub-pool with no replicas has all its rows tight at 0 = 0: not a binding limit
        sub_rows = df["kind"].isin(["util", "kv", "tokens", "seqs", "tbt"]).to_numpy()
        unused = np.zeros(len(df), dtype=bool)
        unused[sub_rows] = yv[df.loc[sub_rows, "index"].to_numpy(dtype=int)] <= 1e-9
        df.loc[unused, "binding"] = False
        return df.drop(columns=["lb", "ub"])


def _power(pb: Problem, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    return float(pb.s_busy_base_w @ y + pb.a_energy_net @ x + pb.pool_idle_w @ z)


def _cost(pb: Problem, y: np.ndarray) -> float:
    return float(pb.pool_cost_per_hour[pb.s_pool] @ y) if len(y) else 0.0


def _solve_stage(pb: Problem, objective: str, backend: str, integer: bool, fixed_y=None) -> tuple[str, _Model]:
    """Solve the (lexicographic) objective on one model; returns status and the model."""
    m = _Model(pb, backend, integer, elastic=False, throughput=objective == "throughput", fixed_y=fixed_y)
    if objective == "energy":
        m.set_power_objective()
        return m.solve(), m
    if objective == "cost":
        m.set_cost_objective()
        st = m.solve()
        if st != "optimal":
            return st, m
        m.add_cost_cap(m.solver.Objective().Value())
        m.set_power_objective()
        return m.solve(), m
    m.set_alpha_objective()
    st = m.solve()
    if st != "optimal":
        return st, m
    m.add_alpha_floor(m.alpha.solution_value())
    m.set_power_objective()
    return m.solve(), m


def solve(pb: Problem, objective: str = "energy", integer: bool = True) -> LpSolution:
    """Solve the program; an infeasible input returns a diagnosed ``status='infeasible'`` solution."""
    t0 = time.perf_counter()
    if pb.num_arcs == 0 or any(not np.any(pb.a_class == k) for k in range(len(pb.class_names))):
        sol = diagnose(pb, objective, integer=False)
        sol.solve_time_s = time.perf_counter() - t0
        return sol
    st, relax = _solve_stage(pb, objective, "GLOP", integer=False)
    size = dict(relax.size)
    if st != "optimal":
        sol = diagnose(pb, objective, integer=False)
        sol.solve_time_s = time.perf_counter() - t0
        return sol
    relax_duals = relax.dual_table()
    final = relax
    if integer:
        st, mip = _solve_stage(pb, objective, "SCIP", integer=True)
        size["integer_variables"] = mip.size["integer_variables"]
        size["mip_proven_optimal"] = mip.proven_optimal
        if st != "optimal":
            sol = diagnose(pb, objective, integer=True, relaxation_feasible=True)
            sol.solve_time_s = time.perf_counter() - t0
            return sol
        _, y_int, _ = mip.values()
        y_int = np.round(y_int)
        st, final = _solve_stage(pb, objective, "GLOP", integer=False, fixed_y=y_int)
        if st != "optimal":  # pragma: no cover - the MIP's y admits its own x
            raise RuntimeError(f"LP with the MIP's GPU counts fixed is {st}")
    final_duals = relax_duals if final is relax else final.dual_table()
    x, y, z = final.values()
    x = np.maximum(x, 0.0)
    alpha = final.alpha.solution_value() if final.alpha is not None else 1.0
    return LpSolution(
        status="optimal", objective=objective, problem=pb, x=x, y=y, idle=z, alpha=alpha,
        objective_value=final.solver.Objective().Value(), power_w=_power(pb, x, y, z), cost_per_hour=_cost(pb, y),
        duals=final_duals, relaxation_duals=relax_duals, solve_time_s=time.perf_counter() - t0,
        size=size, integer=integer,
    )


def diagnose(pb: Problem, objective: str, integer: bool, relaxation_feasible: bool = False) -> LpSolution:
    """Elastic program: the least unserved share of demand, and the constraints that prevent more.

    Returns an ``infeasible`` solution whose ``violations`` are readable lines, the first one a
    summary naming the classes that cannot be served and why.
    """
    K = len(pb.class_names)
    violations: list[str] = []
    no_arc = [k for k in range(K) if not np.any(pb.a_class == k)]
    if pb.num_arcs:
        backend = "SCIP" if integer else "GLOP"
        m = _Model(pb, backend, integer, elastic=True, throughput=False)
        m.set_unserved_objective()
        st = m.solve()
        if st != "optimal":  # pragma: no cover - the elastic program is always feasible
            raise RuntimeError(f"elastic program is {st}")
        x, y, z = m.values()
        unserved = np.array([u.solution_value() for u in m.u])
        if integer:  # duals from the LP with the integer counts fixed
            m = _Model(pb, "GLOP", False, elastic=True, throughput=False, fixed_y=np.round(y))
            m.set_unserved_objective()
            m.solve()
        duals = m.dual_table()
    else:
        x, y, z = np.zeros(0), np.zeros(0), pb.pool_count.copy()
        unserved = pb.rate.copy()
        duals = pd.DataFrame(columns=["kind", "constraint", "index", "shadow_price", "activity", "slack", "binding"])
    short = [k for k in range(K) if unserved[k] > 1e-7 * pb.rate[k]]
    for k in short:
        name = pb.class_names[k]
        if k in no_arc:
            reasons = pb.ineligible.get(k, ["no pool/clock can serve it"])
            violations.append(
                f"class '{name}' cannot be served on any pool/clock: " + "; ".join(reasons)
            )
        else:
            served = pb.rate[k] - unserved[k]
            violations.append(
                f"class '{name}': only {served:.4g} of {pb.rate[k]:.4g} req/s can be served "
                f"({100 * served / pb.rate[k]:.1f}%): traffic above capacity"
            )
    if duals is not None and len(duals):
        bind = duals[duals["binding"] & (duals["kind"] != "demand")]
        for _, r in bind.iterrows():
            what = {
                "fleet": "all GPUs in use",
                "util": "utilization cap (rho_max or an SLO bound on rho)",
                "kv": "KV memory (kv_fraction x M_total)",
                "tokens": "token budget (budget_fraction x B)",
                "seqs": "running sequences (seq_fraction x max_num_seqs)",
                "tbt": "TPOT spread from prefill interference (tpot_z, tpot_mean_share)",
            }[r["kind"]]
            violations.append(f"binding: {r['constraint']}: {what} (shadow price {r['shadow_price']:.4g} per unit)")
    names = ", ".join(f"'{pb.class_names[k]}'" for k in short) or "none"
    if any(k in no_arc for k in short):
        kind = "SLO tighter than any pool/clock can meet"
    elif relaxation_feasible:
        kind = "integer GPU counts (the LP relaxation is feasible; each SLO group needs whole GPUs)"
    else:
        kind = "traffic above capacity"
    violations.insert(0, f"infeasible: {kind}; unserved class(es) {names}")
    sol = LpSolution(
        status="infeasible", objective=objective, problem=pb, x=x, y=y, idle=z,
        duals=duals, violations=violations, unserved=unserved, integer=integer,
    )
    return sol
