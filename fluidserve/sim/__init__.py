"""Discrete, iteration-level (vLLM-like) simulator."""

from fluidserve.sim.engine import SCHEDULERS, ReplicaEngine
from fluidserve.sim.records import StepRecord
from fluidserve.sim.result import SimResult
from fluidserve.sim.routers import ROUTERS, make_router
from fluidserve.sim.simulator import make_engine, simulate

__all__ = ["ROUTERS", "SCHEDULERS", "ReplicaEngine", "SimResult", "StepRecord", "make_engine", "make_router", "simulate"]
