"""Real-engine experiment harness: single-instance and disaggregated prefill/decode runs.

``processes`` (start/stop server process groups), ``commands`` (vLLM and stand-in command
lines), ``proxy`` (the prefill -> decode proxy), ``runner`` (load phases, power, results),
``report`` (figures, Markdown, the simulator's prediction), ``cli`` (``python -m fluidserve harness``).
"""
