"""The composed max-ent policy ``pi_w(a|s) ∝ exp(Q_w(s,a)/alpha)``, acting like a skill.

``ComposedPolicy`` answers the ``skills.policy.SoftPolicy`` calls (``act``, ``sample``, ``q``,
``value``) with ``Q_w`` and the amortized sampler trained on it, so evaluation, the convergence
diagnostics and the Monte Carlo bound treat it exactly like a trained skill.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from skills.policy import MAX_SAMPLES, ArrayLike, check_count, checked, like, value_in_chunks
from skills.sql import SamplerNetwork, estimate_soft_value

from .composition import Composition

EVAL_PARTICLES = 32  # candidates for deterministic actions, as for skills (SQLConfig.eval_particles)
PROPOSAL_CENTERS = 8  # sampler actions that centre the importance proposal of V_w


class ComposedPolicy:
    """``Q_w`` of a ``Composition`` with its amortized SVGD sampler; CPU, no gradients.

    ``generator`` seeds the sampler's noise, so a seeded policy acts reproducibly.
    """

    def __init__(self, composition: Composition, sampler: SamplerNetwork, seed: int = 0,
                 particles: Callable[[torch.Tensor, Sequence[torch.Generator] | None], torch.Tensor] | None = None,
                 q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        """``particles``: act with other draws of ``pi_w`` instead, obs [B, o] -> actions [B, K, d] (per-decision
        SVGD, ``sampling.ParticlePolicy.particles``, or ``sampling.resampled_actions``); a sample is one of
        them at random, a deterministic action the best under ``Q_w``. ``sampler`` still centres the
        importance proposal of ``V_w``. ``q_fn``: the energy the policy samples (default ``Q_w``; another
        operator's, ``compose.operators``); ``q``, ``value`` and deterministic actions use it."""
        self.composition, self.sampler, self.particles = composition, sampler, particles
        self.q_fn = q_fn if q_fn is not None else composition.q_w
        self.name = composition.name
        self.alpha, self.gamma = composition.alpha, composition.gamma
        self.obs_dim, self.act_dim = composition.obs_dim, composition.act_dim
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def sample(self, obs: ArrayLike, n: int) -> ArrayLike:
        """``n`` actions per state as the policy acts: [B, o] -> [B, n, d]; draws of the amortized sampler, or with
        per-decision ``particles`` the particles of as many decisions as ``n`` needs (a stochastic action is one of
        one decision's particles)."""
        o = checked(obs, self.obs_dim).reshape(-1, self.obs_dim)
        n = check_count(n, "n", MAX_SAMPLES)
        if self.particles is None:
            return like(self.sampler.sample(o, n, generator=self.generator), obs)
        draws, count = [], 0
        while count < n:
            draws.append(self.particles(o, None))
            count += draws[-1].shape[1]
        return like(torch.cat(draws, dim=1)[:, :n], obs)

    @torch.no_grad()
    def act(self, obs: ArrayLike, deterministic: bool = False,
            generators: Sequence[torch.Generator] | None = None) -> np.ndarray:
        """One action per state: a sampler draw, or (``deterministic``) the highest-``Q_w`` of 32 draws; from the
        policy's own stream, or with ``generators`` from one stream per row."""
        o = checked(obs, self.obs_dim)
        single = o.dim() == 1
        o = o.reshape(-1, self.obs_dim)
        if self.particles is not None:
            candidates = self.particles(o, generators)  # [B, K, d]
            if deterministic:
                pick = self.q_fn(o.unsqueeze(1), candidates).argmax(dim=1)
            elif generators is not None:
                pick = torch.cat([torch.randint(candidates.shape[1], (1,), generator=g) for g in generators])
            else:
                pick = torch.randint(candidates.shape[1], (len(o),), generator=self.generator)
            actions = candidates[torch.arange(len(o)), pick]
        elif deterministic:
            candidates = self.sampler.sample(o, EVAL_PARTICLES, generator=self.generator, generators=generators)
            best = self.q_fn(o.unsqueeze(1), candidates).argmax(dim=1)
            actions = candidates[torch.arange(len(o)), best]
        else:
            actions = self.sampler.sample(o, 1, generator=self.generator, generators=generators)[:, 0]
        out = actions.numpy()
        return out[0] if single else out

    @torch.no_grad()
    def q(self, obs: ArrayLike, act: ArrayLike) -> ArrayLike:
        """``Q_w(s, a) = sum_i w_i Q_i(s, a)``: [..., o], [..., d] -> [...]."""
        return like(self.q_fn(checked(obs, self.obs_dim), checked(act, self.act_dim, "action")), act)

    @torch.no_grad()
    def value(self, obs: ArrayLike, n_samples: int = 1024) -> ArrayLike:
        """``V_w(s) = alpha log ∫ exp(Q_w(s,a)/alpha) da``, importance-sampled around the composed
        sampler's actions (mixture proposal, as ``skills.Skill.value``): [B, o] -> [B]."""
        def value_of(chunk: torch.Tensor) -> torch.Tensor:
            centers = self.sampler.sample(chunk, PROPOSAL_CENTERS, generator=self.generator)
            return estimate_soft_value(self.q_fn, chunk, n_samples, self.alpha, self.act_dim, centers,
                                       generator=self.generator)

        return like(value_in_chunks(value_of, checked(obs, self.obs_dim).reshape(-1, self.obs_dim), n_samples), obs)
