"""Where one SQL update's time goes on a device: ``python -m bench.device_profile --device cuda``.

Runs ``SoftQLearning.update`` (the ``reach`` hyperparameters, a buffer of random transitions
with the ``reach`` shapes, batches sampled onto the device as training does) and reports per
update:

* wall-clock ms of one update with its batch, and of the batch sampling alone (interleaved
  runs, min and median);
* from ``torch.profiler``: the kernels launched, their summed device time (how busy the GPU
  is while the host drives it), the host-device copies, and the CUDA runtime calls, among
  them the synchronisations that stall the host;
* the ops with the most self time (device time on a GPU, CPU time on the CPU).

On the CPU the profiler sees the CPU side only. ``--json PATH`` also writes the profiler's
op table to ``PATH`` with the suffix ``.txt``.

``--stacked-seeds N`` profiles the update of N seeds stacked (``skills.sql.many_seeds.StackedSoftQLearning``, as
``skills.train --seeds`` runs it) instead, and times one seed's update beside it in the same run: aggregate
updates/s (N per stacked update), the speedup over one seed, and on a GPU how busy the stacked update keeps it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from bench import cli
from bench.timing import interleaved_rates, machine_info, ms_per_unit, sync
from bench.update_profile import ACT_DIM, OBS_DIM, random_buffer
from skills.library import atomic_write_text
from skills.sql.learner import SoftQLearning, torch_device
from skills.sql.many_seeds import StackedSoftQLearning
from skills.training.defaults import sql_config

COPY_PREFIXES = ("Memcpy", "Memset")


def chunk(fn: Callable[[], object], calls: int, device: torch.device) -> Callable[[], int]:
    """A timed unit for ``interleaved_rates``: ``calls`` calls of ``fn``, finished on the device."""
    def run() -> int:
        for _ in range(calls):
            fn()
        sync(device)
        return calls
    return run


def profile_updates(step: Callable[[], object], device: torch.device, updates: int):
    """``torch.profiler`` over ``updates`` calls of ``step`` (CPU activity, plus CUDA on a GPU)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(updates):
            step()
        sync(device)
    return prof


def summarize_profile(events, updates: int, on_gpu: bool, top: int = 12) -> dict:
    """Per-update counts and times from the profiler's ``key_averages()``; busy time is
    kernels plus copies."""
    # record_function ranges (e.g. "Optimizer.step#Adam.step") span kernels that are counted already
    events = [e for e in events if not getattr(e, "is_user_annotation", False)]
    device_events = [e for e in events if on_gpu and e.device_type == torch.autograd.DeviceType.CUDA]
    copies = [e for e in device_events if e.key.startswith(COPY_PREFIXES)]
    kernels = [e for e in device_events if not e.key.startswith(COPY_PREFIXES)]
    runtime = {e.key: e.count / updates for e in events if e.key.startswith("cuda")}
    by_self_time = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    ranked = sorted(events, key=lambda e: getattr(e, by_self_time), reverse=True)[:top]
    summary = {
        "aten_ops_per_update": sum(e.count for e in events if e.key.startswith("aten::")) / updates,  # nested too
        "top_ops_by": by_self_time,
        "top_ops": [{"name": e.key, "calls_per_update": e.count / updates,
                     "self_ms_per_update": getattr(e, by_self_time) / 1e3 / updates} for e in ranked],
    }
    if on_gpu:
        summary |= {
            "kernels_per_update": sum(e.count for e in kernels) / updates,
            "kernel_ms_per_update": sum(e.self_device_time_total for e in kernels) / 1e3 / updates,
            "copies_per_update": sum(e.count for e in copies) / updates,
            "copy_ms_per_update": sum(e.self_device_time_total for e in copies) / 1e3 / updates,
            "cuda_runtime_calls_per_update": runtime,
            "syncs_per_update": sum(n for name, n in runtime.items() if "Synchronize" in name),
        }
    return summary


def measure(device: str, buffer_size: int, updates: int, repeats: int, warmup: int, profiled: int,
            stacked_seeds: int = 0) -> tuple[dict, str]:
    """The profile's figures, and the profiler's op table as text. ``stacked_seeds``: profile N seeds' stacked update."""
    dev = torch_device(device)
    torch.manual_seed(0)
    config = sql_config("reach", "fetch-arm")
    agent = SoftQLearning(OBS_DIM, ACT_DIM, config, dev)
    buffer, rng = random_buffer(buffer_size), np.random.default_rng(1)

    def step() -> None:
        agent.update(buffer.sample(config.batch_size, rng, dev))

    profiled_step, workloads = step, {"batch_sampling_ms": chunk(lambda: buffer.sample(config.batch_size, rng, dev),
                                                                  updates, dev)}
    if stacked_seeds:
        members = [SoftQLearning(OBS_DIM, ACT_DIM, config, dev) for _ in range(stacked_seeds)]
        streams = [torch.Generator(device=dev).manual_seed(i) for i in range(stacked_seeds)]
        stack, rngs = StackedSoftQLearning(members, streams), [np.random.default_rng(10 + i) for i in range(stacked_seeds)]

        def stacked_step() -> None:
            stack.update([buffer.sample(config.batch_size, r, dev) for r in rngs])

        profiled_step = stacked_step  # the stacked update is the one profiled
        workloads["stacked_update_with_batches_ms"] = chunk(stacked_step, updates, dev)
        chunk(stacked_step, warmup, dev)()
    workloads["update_with_batch_ms"] = chunk(step, updates, dev)
    chunk(step, warmup, dev)()  # allocator, library handles, the target cache
    ms = ms_per_unit(interleaved_rates(workloads, repeats))
    events = profile_updates(profiled_step, dev, profiled).key_averages()
    on_gpu = dev.type == "cuda"
    result = {"device": str(dev), **ms, **summarize_profile(events, profiled, on_gpu)}
    if stacked_seeds:
        single, stacked = ms["update_with_batch_ms"]["median"], ms["stacked_update_with_batches_ms"]["median"]
        result |= {"stacked_seeds": stacked_seeds, "single_updates_per_s": 1e3 / single,
                   "aggregate_updates_per_s": stacked_seeds * 1e3 / stacked, "speedup": stacked_seeds * single / stacked,
                   "profiled_update": f"{stacked_seeds} seeds stacked"}
    if on_gpu:
        busy_ms = result["kernel_ms_per_update"] + result["copy_ms_per_update"]
        timed = "stacked_update_with_batches_ms" if stacked_seeds else "update_with_batch_ms"
        result["device_busy_fraction"] = busy_ms / ms[timed]["median"]
    result |= {"buffer_size": buffer_size, "updates": updates, "repeats": repeats, "warmup": warmup, "profiled": profiled,
               "config": config.to_dict(), "machine": machine_info()}
    table = events.table(sort_by=result["top_ops_by"], row_limit=40)
    return result, table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.device_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:N)")
    parser.add_argument("--buffer", type=int, default=20_000, help="replay buffer size (random transitions)")
    parser.add_argument("--updates", type=int, default=100, help="updates per timed run")
    parser.add_argument("--profiled", type=int, default=20, help="updates run under the profiler")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs")
    parser.add_argument("--warmup", type=int, default=100, help="untimed updates first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--stacked-seeds", type=int, default=0, metavar="N", help="profile N seeds' stacked update "
                        "(skills.train --seeds) and time one seed's beside it")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON (and the op table beside it)")
    args = cli.parse(parser, argv)
    result, table = measure(args.device, args.buffer, args.updates, args.repeats, args.warmup, args.profiled,
                            args.stacked_seeds)
    print(table)
    print(f"device {result['device']}: update with its batch {result['update_with_batch_ms']['median']:.3f} ms "
          f"(min {result['update_with_batch_ms']['min']:.3f}), batch sampling alone "
          f"{result['batch_sampling_ms']['median']:.3f} ms, {result['aten_ops_per_update']:.0f} aten ops"
          + (" (profiled: one seed)" if not args.stacked_seeds else ""))
    if args.stacked_seeds:
        print(f"{args.stacked_seeds} seeds stacked: {result['stacked_update_with_batches_ms']['median']:.3f} ms per update of "
              f"all seeds; aggregate {result['aggregate_updates_per_s']:.0f} updates/s against one seed's "
              f"{result['single_updates_per_s']:.0f} (speedup {result['speedup']:.2f}); profiled: the stacked update")
    if "kernels_per_update" in result:
        print(f"per update: {result['kernels_per_update']:.0f} kernels, {result['kernel_ms_per_update']:.3f} ms of "
              f"kernel time, {result['copies_per_update']:.1f} copies ({result['copy_ms_per_update']:.3f} ms); "
              f"device busy {result['device_busy_fraction']:.0%}; {result['syncs_per_update']:.1f} synchronisations")
        for name, calls in sorted(result["cuda_runtime_calls_per_update"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:40s} {calls:7.1f} per update")
    if args.json:
        path = Path(args.json)
        atomic_write_text(path, json.dumps(result, indent=2))
        atomic_write_text(path.with_suffix(".txt"), table + "\n")
        print(f"wrote {path} and {path.with_suffix('.txt')}")
    return result


if __name__ == "__main__":
    main()
