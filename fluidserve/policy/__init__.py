"""LP policies over the fluid model: routing, DVFS clocks, GPU counts, prefill/decode split.

Modules: ``frequency`` (clock and power model), ``steady`` (fluid steady state), ``lp_config``
(YAML schema), ``problem`` / ``lp`` (the OR-Tools program), ``report``, ``validate`` (simulator
replay against baselines), ``disagg`` (tandem fluid model and split), ``figures``, ``cli``.
OR-Tools is imported only when a program is solved.
"""
