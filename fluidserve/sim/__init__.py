"""Discrete, iteration-level (vLLM-like) simulator."""

from fluidserve.sim.engine import ReplicaEngine
from fluidserve.sim.result import SimResult
from fluidserve.sim.simulator import make_engine, simulate

__all__ = ["ReplicaEngine", "SimResult", "make_engine", "simulate"]
