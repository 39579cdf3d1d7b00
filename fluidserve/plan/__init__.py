"""``fluidserve plan``: the cheapest fleet, clock and scheduler settings that meet a latency SLO.

Config schema (:mod:`.config`), traffic (:mod:`.traffic`), candidate space (:mod:`.space`),
SLO bookkeeping (:mod:`.slo`), screen (:mod:`.screen`), simulator verification (:mod:`.verify`),
heterogeneous mixes through the LP (:mod:`.hetero`), search (:mod:`.search`), resumable results
(:mod:`.store`), outputs (:mod:`.report`), command (:mod:`.cli`).
"""
