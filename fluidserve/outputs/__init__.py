"""Outputs of a run: summary metrics, result files, figures and experiment management.

Submodules are imported on use (``from fluidserve.outputs.metrics import summarize``) so
that importing the package does not pull in matplotlib.
"""
