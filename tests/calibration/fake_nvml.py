"""A fake NVML module (pynvml's function names) for testing PowerMonitor without a GPU.

Each GPU draws a constant ``power_w``; its total-energy counter (mJ) grows as power x wall
time since the fake was created, exactly as a real counter would at constant power.
"""

from __future__ import annotations

import time
from types import SimpleNamespace


class FakeNVMLError(Exception):
    pass


class FakeNVML:
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, power_w=(300.0,), energy_counter=True, init_fails=False, sm_clock_mhz=1980):
        self.power_w = list(power_w)
        self.energy_counter = energy_counter
        self.init_fails = init_fails
        self.sm_clock_mhz = sm_clock_mhz
        self.t0 = time.perf_counter()
        self.initialised = 0
        self.calls = 0

    def nvmlInit(self):
        if self.init_fails:
            raise FakeNVMLError("NVML Shared Library Not Found")
        self.initialised += 1

    def nvmlShutdown(self):
        self.initialised -= 1

    def nvmlDeviceGetCount(self):
        return len(self.power_w)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"Fake GPU %d" % h

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.calls += 1
        if not self.energy_counter:
            raise FakeNVMLError("Not Supported")
        return int(1_000_000 + self.power_w[h] * (time.perf_counter() - self.t0) * 1e3)

    def nvmlDeviceGetPowerUsage(self, h):
        self.calls += 1
        return int(self.power_w[h] * 1e3)

    def nvmlDeviceGetClockInfo(self, h, kind):
        return self.sm_clock_mhz if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=97, memory=60)

    def nvmlDeviceGetTemperature(self, h, kind):
        return 55 + h
