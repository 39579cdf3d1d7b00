"""An OpenAI-compatible simulated endpoint: requests enter the discrete simulator in (scaled)
wall-clock time and their tokens are streamed at the simulated step boundaries.

Modules: ``tokens`` (prompt token-count rule, output text), ``protocol`` (request validation,
OpenAI response shapes and errors), ``driver`` (the clock and the task that steps the engine),
``metrics`` (Prometheus /metrics), ``app`` (the FastAPI app), ``cli`` (``fluidserve serve``),
``launch`` (run a server in a subprocess), ``streamprofile`` and ``e2e`` (end-to-end
calibration from client-side token timestamps). Nothing here imports FastAPI at package import.
"""
