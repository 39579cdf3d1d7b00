"""Calibration: measure a GPU (power, step times, served load) and fit batch-time coefficients."""
