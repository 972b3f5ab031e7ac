"""Sampling the composed energy policy ``pi_w(a|s) ∝ exp(Q_w(s,a)/alpha)`` with SVGD.

* ``train_amortized_sampler``: a fresh sampler network trained by amortized SVGD on the frozen
  ``Q_w``, over the constituents' stored states. No environment samples.
* ``ParticlePolicy``: plain SVGD on action particles at each decision, no training at all.
* ``resampled_actions``: self-normalised importance resampling of ``exp(Q_w/alpha)`` from many
  uniform draws; slow, but with no sampler in the way, so it measures what the sampler costs.

Both run SVGD in u-space (``a = tanh(u)``) with the same kernel and score as SQL training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from skills.sql import SamplerNetwork, sampler_svgd_loss, seeded, svgd_step_direction
from skills.sql.equations import row_noise, row_uniform
from skills.training.progress import progress_bar

QFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplerConfig:
    """Amortized SVGD on a frozen Q."""

    updates: int = 10_000  # gradient steps (the previous release: 3000); 83 s once, then cached
    batch_size: int = 128  # states per step, drawn from the constituents' stored states
    particles: int = 16  # K particles per state
    fixed_fraction: float = 0.5  # share of particles that score (the rest move)
    lr: float = 1e-3  # Adam learning rate
    hidden: tuple[int, ...] = (128, 128)  # sampler MLP widths
    seed: int = 0  # seeds the sampler's initialisation and draws

    def to_dict(self) -> dict:
        return asdict(self) | {"hidden": list(self.hidden)}


def train_amortized_sampler(q_fn: QFunction, states: np.ndarray, act_dim: int, alpha: float,
                            obs_scale: torch.Tensor, config: SamplerConfig = SamplerConfig(),
                            progress: bool = False) -> tuple[SamplerNetwork, dict]:
    """Fit ``u = f(s, xi)`` so that ``tanh(u) ~ exp(Q(s,a)/alpha)`` at the given states."""
    generator = torch.Generator().manual_seed(config.seed)
    with seeded(config.seed):  # the caller's torch stream is left as it was
        sampler = SamplerNetwork(states.shape[1], act_dim, config.hidden, obs_scale)
        optimizer = torch.optim.Adam(sampler.parameters(), lr=config.lr)
        data = torch.as_tensor(states, dtype=torch.float32)
        n_fixed = max(1, int(round(config.particles * config.fixed_fraction)))
        start = time.perf_counter()
        bar = progress_bar(config.updates, progress, desc="composed sampler", unit="update")
        for _ in range(config.updates):
            bar.update(1)
            obs = data[torch.randint(len(data), (config.batch_size,), generator=generator)]
            noise = torch.randn(config.batch_size, config.particles, act_dim, generator=generator)
            loss = sampler_svgd_loss(sampler, q_fn, obs, noise, n_fixed, alpha)
            if not torch.isfinite(loss):
                raise FloatingPointError("non-finite SVGD loss while training the composed sampler")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        bar.close()
    return sampler, {"wall_time_s": time.perf_counter() - start, "updates": config.updates}


@dataclass(frozen=True)
class ParticleConfig:
    """Per-decision SVGD on action particles (RMS-normalised steps, as in Liu & Wang's code)."""

    particles: int = 16  # particles per decision
    steps: int = 60  # SVGD iterations per decision
    step_size: float = 0.05  # in u-space, divided by the running RMS of each particle's direction
    rms_decay: float = 0.9  # decay of that running mean square


def constituent_init(samplers: list[SamplerNetwork]):
    """Start particles from the constituents' own samplers, an equal share each (pre-tanh ``u``)."""

    def init(obs: torch.Tensor, k: int, generator: torch.Generator,
             generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        shares = [k // len(samplers) + (i < k % len(samplers)) for i in range(len(samplers))]
        with torch.no_grad():
            parts = [s(obs, torch.randn(len(obs), n, s.act_dim, generator=generator) if generators is None
                       else row_noise(generators, (n, s.act_dim)))
                     for s, n in zip(samplers, shares, strict=True) if n > 0]
        return torch.cat(parts, dim=1)

    return init


class ParticlePolicy:
    """Act by running SVGD on fresh particles for each state; returns one particle (a sample)."""

    def __init__(self, q_fn: QFunction, act_dim: int, alpha: float, config: ParticleConfig = ParticleConfig(),
                 seed: int = 0, init: Callable[..., torch.Tensor] | None = None):
        """``init(obs [B, o], K, generator) -> u [B, K, d]`` starts the particles (default: N(0, I))."""
        self.q_fn, self.act_dim, self.alpha, self.config = q_fn, act_dim, alpha, config
        self.generator = torch.Generator().manual_seed(seed)
        self.init = init

    def particles(self, obs: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """SVGD particles (actions) per state: obs [B, o] -> [B, K, d]; started from the policy's stream, or with
        ``generators`` from one stream per row."""
        cfg = self.config
        if self.init is not None:
            u = self.init(obs, cfg.particles, self.generator, generators)
        elif generators is not None:
            u = row_noise(generators, (cfg.particles, self.act_dim))
        else:
            u = torch.randn(len(obs), cfg.particles, self.act_dim, generator=self.generator)
        mean_square = None
        for _ in range(cfg.steps):
            phi = svgd_step_direction(self.q_fn, obs, u, u, self.alpha)
            square = phi.pow(2)
            mean_square = square if mean_square is None else cfg.rms_decay * mean_square + (1 - cfg.rms_decay) * square
            u = u + cfg.step_size * phi / (mean_square.sqrt() + 1e-6)
        return torch.tanh(u)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(np.atleast_2d(obs), dtype=torch.float32)
        a = self.particles(o)
        pick = torch.randint(self.config.particles, (len(o),), generator=self.generator)
        out = a[torch.arange(len(o)), pick].numpy()
        return out[0] if np.ndim(obs) == 1 else out


def resampled_actions(q_fn: QFunction, obs: torch.Tensor, k: int, alpha: float, act_dim: int, proposals: int = 8192,
                      generator: torch.Generator | None = None,
                      generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """``k`` draws per state from ``pi(a|s) ∝ exp(Q(s,a)/alpha)`` on the box by sampling-importance-
    resampling: ``proposals`` uniform actions weighted by ``softmax(Q/alpha)``. obs [B, o] -> [B, k, d].

    Consistent as ``proposals`` grows (no learned sampler); at d = 3 and alpha = 0.05 about 30 of
    8192 proposals carry the weight, so it is a reference, not a fast policy.
    """
    with torch.no_grad():
        if generators is None:
            candidates = torch.rand(len(obs), proposals, act_dim, generator=generator) * 2.0 - 1.0
        else:
            candidates = row_uniform(generators, (proposals, act_dim)) * 2.0 - 1.0
        weights = torch.softmax(q_fn(obs.unsqueeze(1), candidates) / alpha, dim=-1)  # [B, n]
        if generators is None:
            pick = torch.multinomial(weights, k, replacement=True, generator=generator)  # [B, k]
        else:
            pick = torch.stack([torch.multinomial(w, k, replacement=True, generator=g)
                                for w, g in zip(weights, generators, strict=True)])
        return candidates.gather(1, pick.unsqueeze(-1).expand(-1, -1, act_dim))
