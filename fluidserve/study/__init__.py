"""Studies built on the simulator: the multi-GPU scaling study (:mod:`fluidserve.study.scaling`)."""
