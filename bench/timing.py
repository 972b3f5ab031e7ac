"""Repeat-and-interleave timing helpers shared by the benchmarks."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch


def interleaved_rates(workloads: dict[str, Callable[[], int]], repeats: int, seed: int = 0) -> dict[str, dict]:
    """Run each workload ``repeats`` times in shuffled order; each returns its unit count.

    Returns ``{name: {"min": rate, "median": rate, "max": rate, "runs": [...]}}`` in units/s.
    Interleaving keeps slow drifts of a shared machine from favouring one side.
    """
    rng = np.random.default_rng(seed)
    runs: dict[str, list[float]] = {name: [] for name in workloads}
    for _ in range(repeats):
        for name in rng.permutation(list(workloads)):
            start = time.perf_counter()
            units = workloads[name]()
            runs[name].append(units / (time.perf_counter() - start))
    return {name: {"min": min(r), "median": statistics.median(r), "max": max(r), "runs": r}
            for name, r in runs.items()}


def ms_per_unit(rates: dict[str, dict]) -> dict[str, dict[str, float]]:
    """``interleaved_rates`` output as min and median ms per unit."""
    return {name: {"min": 1e3 / r["max"], "median": 1e3 / r["median"]} for name, r in rates.items()}


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def machine_info() -> dict:
    """Processor, core count and library versions, for the record."""
    import os

    import gymnasium
    import mujoco

    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "mujoco": mujoco.__version__, "gymnasium": gymnasium.__version__}
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
        if model:
            info["processor"] = model
    except OSError:
        pass
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info
