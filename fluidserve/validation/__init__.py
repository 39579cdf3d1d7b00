"""Validation against real serving runs: read runs, replay them in the simulator, compare, fit presets."""
