"""Where one SQL update's time goes, and what each speed-up buys: ``python -m bench.update_profile``.

Times ``SoftQLearning.update`` on a filled replay buffer (random transitions of the ``reach``
shapes, 12-D observations, 3-D actions, the ``reach`` hyperparameters), one torch thread:

* **ablation**: cumulative variants, interleaved in shuffled order, min and median ms/update:
  ``reference`` (autograd through the textbook losses of ``skills.sql``, first layer on the
  concatenation ``[s, a]``, per-tensor Adam, a fresh soft value target every update), then
  ``+ split first layer``, ``+ fused Adam``, ``+ target cache``, ``+ hand-written backprop``
  (``SoftQLearning.update``, the toolkit's default). The earlier variants are rebuilt here
  (``autograd_update``, patched ``forward`` and optimizers); all share ``svgd_direction``.
* **sections**: median ms of the update's parts for the default variant.
* **FLOPs and aten ops** per update (matmul FLOPs and every dispatched op, views included,
  counted at dispatch, averaged over the timed window).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from bench import cli
from bench.flops import count_dispatch
from bench.timing import interleaved_rates, machine_info, ms_per_unit
from skills.sql import (
    SamplerNetwork,
    SoftQNetwork,
    backprop,
    sampler_svgd_loss,
    soft_bellman_target,
    soft_q_loss,
    squashed_score,
    svgd_direction,
)
from skills.sql.learner import SoftQLearning, SQLConfig
from skills.training.buffer import ReplayBuffer
from skills.training.defaults import sql_config

OBS_DIM, ACT_DIM = 12, 3


def random_buffer(size: int, seed: int = 0) -> ReplayBuffer:
    """``size`` random transitions with the ``reach`` shapes."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(OBS_DIM, ACT_DIM, size)
    for _ in range(size):
        buffer.add(0.1 * rng.normal(size=OBS_DIM), rng.uniform(-1, 1, ACT_DIM), rng.normal(),
                   0.1 * rng.normal(size=OBS_DIM), False)
    return buffer


def _concat_q_forward(self: SoftQNetwork, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    obs = (obs * self.obs_scale).expand(*act.shape[:-1], obs.shape[-1])
    return self.net(torch.cat([obs, act], dim=-1)).squeeze(-1)


def _concat_sampler_forward(self: SamplerNetwork, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    obs = (obs * self.obs_scale).unsqueeze(-2).expand(*noise.shape[:-1], obs.shape[-1])
    return noise + self.net(torch.cat([obs, noise], dim=-1))


@contextlib.contextmanager
def concatenated_first_layer(agent: SoftQLearning) -> Iterator[None]:
    """Run ``agent``'s networks with the textbook ``W [s, a] + b`` first layer (same weights)."""
    nets: list[tuple[nn.Module, Callable[..., torch.Tensor]]] = [
        (agent.q, _concat_q_forward), (agent.q_target, _concat_q_forward), (agent.sampler, _concat_sampler_forward)]
    for net, forward in nets:
        net.forward = forward.__get__(net)
    try:
        yield
    finally:
        for net, _ in nets:
            del net.forward


def autograd_update(agent: SoftQLearning, batch: dict[str, torch.Tensor]) -> None:
    """``SoftQLearning.update`` with autograd through the textbook losses instead of ``backprop``."""
    cfg, obs = agent.config, batch["obs"]
    q_hat = soft_bellman_target(batch["reward"], batch["terminated"], agent.next_state_value(batch), cfg.gamma)
    q_loss = soft_q_loss(agent.q(obs, batch["action"]), q_hat)
    noise = torch.randn(len(obs), cfg.particles, agent.act_dim)
    sampler_loss = sampler_svgd_loss(agent.sampler, agent.q, obs, noise, cfg.n_fixed, cfg.alpha)
    for optimizer, loss in ((agent.q_optimizer, q_loss), (agent.sampler_optimizer, sampler_loss)):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    agent.updates += 1
    if agent.updates % cfg.target_update_interval == 0:
        agent.q_target.load_state_dict(agent.q.state_dict())


def make_variant(name: str, config: SQLConfig) -> tuple[SoftQLearning, Callable[[], contextlib.AbstractContextManager]]:
    """An agent configured as variant ``name``, and a factory of the context its updates run in."""
    cached = name in ("+ target cache", "+ hand-written backprop")
    agent = SoftQLearning(OBS_DIM, ACT_DIM, replace(config, cache_target_values=cached))
    if name in ("reference", "+ split first layer"):
        agent.q_optimizer = torch.optim.Adam(agent.q.parameters(), lr=config.q_lr, foreach=False)
        agent.sampler_optimizer = torch.optim.Adam(agent.sampler.parameters(), lr=config.sampler_lr, foreach=False)
    context = functools.partial(concatenated_first_layer, agent) if name == "reference" else contextlib.nullcontext
    return agent, context


VARIANTS = ("reference", "+ split first layer", "+ fused Adam", "+ target cache", "+ hand-written backprop")


def update_function(name: str) -> Callable[[SoftQLearning, dict], object]:
    return SoftQLearning.update if name == VARIANTS[-1] else autograd_update


def section_times(agent: SoftQLearning, buffer: ReplayBuffer, rng: np.random.Generator, repeats: int) -> dict[str, float]:
    """Median ms of the parts of one update (each run ``repeats`` times on one batch)."""
    cfg, n_fixed = agent.config, agent.config.n_fixed
    batch = buffer.sample(cfg.batch_size, rng)
    obs = batch["obs"]
    noise = torch.randn(cfg.particles, len(obs), ACT_DIM)  # particle-major, as the update lays it out
    u, acts = agent.sampler.traced(obs, noise)
    _, q_acts = agent.q.traced(obs, torch.tanh(u[:n_fixed]))
    score = squashed_score(u[:n_fixed], backprop.input_gradient(agent.q.net, q_acts, n_fixed), cfg.alpha)
    fixed, updated = u[:n_fixed].transpose(0, 1), u[n_fixed:].transpose(0, 1)
    grad_u = torch.randn(len(u[n_fixed:].reshape(-1, ACT_DIM)), ACT_DIM)
    updated_acts = acts.rows(n_fixed * len(obs), len(acts.x))
    parts: dict[str, Callable[[], object]] = {
        "soft value target V(s'), uncached": lambda: agent.target_soft_value(batch["next_obs"]),
        "soft value target V(s'), cache hit": lambda: agent.next_state_value(batch),
        "Q loss and its gradients": lambda: agent.q_loss_and_gradients(batch),
        "sampler forward, all K particles": lambda: agent.sampler.traced(obs, noise),
        "Q forward at fixed particles": lambda: agent.q.traced(obs, torch.tanh(u[:n_fixed])),
        "dQ/da at fixed particles": lambda: backprop.input_gradient(agent.q.net, q_acts, n_fixed),
        "SVGD direction (kernel)": lambda: svgd_direction(fixed, score.transpose(0, 1), updated),
        "sampler gradients, updated particles": lambda: backprop.parameter_gradients(agent.sampler.net, updated_acts, grad_u),
        "Adam steps (Q and sampler)": lambda: (agent.q_optimizer.step(), agent.sampler_optimizer.step()),
        "whole update": lambda: agent.update(buffer.sample(cfg.batch_size, rng)),
    }
    agent.update(batch)  # gives the optimizers gradients to step with
    out = {}
    for name, part in parts.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            part()
            times.append(time.perf_counter() - start)
        out[name] = 1e3 * statistics.median(times)
    return out


def measure(buffer_size: int, updates: int, repeats: int, warmup: int = 200) -> dict:
    """Ablation, sections and FLOPs of the ``reach`` SQL update; see the module docstring."""
    config = sql_config("reach", "fetch-arm")
    buffer = random_buffer(buffer_size)
    agents, rngs = {}, {}
    for name in VARIANTS:
        torch.manual_seed(0)
        agents[name] = make_variant(name, config)
        rngs[name] = np.random.default_rng(1)

    def workload(name: str) -> Callable[[], int]:
        agent, context = agents[name]

        def run() -> int:
            with context():
                for _ in range(updates):
                    update_function(name)(agent, buffer.sample(config.batch_size, rngs[name]))
            return updates
        return run

    for name in VARIANTS:  # warm-up: fill the caches of the allocator and of the cached variant
        for _ in range(max(1, warmup // updates)):
            workload(name)()
    rates = interleaved_rates({name: workload(name) for name in VARIANTS}, repeats)
    flops, ops = {}, {}
    for name in VARIANTS:
        agent, context = agents[name]
        with context():
            def one_update(name=name, agent=agent):
                return update_function(name)(agent, buffer.sample(config.batch_size, rngs[name]))

            counter = count_dispatch(one_update, updates)
        flops[name], ops[name] = counter.flops / updates, counter.ops / updates
    default, _ = agents[VARIANTS[-1]]
    ms = ms_per_unit(rates)
    return {
        "ms_per_update": ms,
        "speedup_vs_reference": ms["reference"]["median"] / ms[VARIANTS[-1]]["median"],
        "flops_per_update": flops,
        "aten_ops_per_update": ops,
        "sections_ms": section_times(default, buffer, rngs[VARIANTS[-1]], max(50, updates)),
        "buffer_size": buffer_size, "updates_per_run": updates, "repeats": repeats,
        "config": config.to_dict(), "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.update_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buffer", type=int, default=20_000, help="replay buffer size (random transitions)")
    parser.add_argument("--updates", type=int, default=100, help="updates per timed run")
    parser.add_argument("--repeats", type=int, default=8, help="timed runs per variant (interleaved)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed updates per variant first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = cli.parse(parser, argv)
    result = measure(args.buffer, args.updates, args.repeats, args.warmup)
    print(f"{'variant':24s} {'min ms':>8s} {'median ms':>10s} {'MFLOP':>8s} {'aten ops':>9s}")
    for name in VARIANTS:
        r = result["ms_per_update"][name]
        print(f"{name:24s} {r['min']:8.2f} {r['median']:10.2f} {result['flops_per_update'][name] / 1e6:8.1f} "
              f"{result['aten_ops_per_update'][name]:9.0f}")
    print(f"speed-up of the default over the reference (medians): {result['speedup_vs_reference']:.2f}x\n")
    for name, t in result["sections_ms"].items():
        print(f"  {name:48s} {t:7.3f} ms")
    if args.json:
        cli.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
