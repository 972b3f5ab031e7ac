"""Entropy of the actions of an amortized sampler ``a = tanh(f(s, xi))``, ``xi ~ N(0, I_d)``, at each state.

``acting_entropy`` is what every soft return uses: the change of variables through the sampler's network
(``change_of_variables_entropy``, ``-log sigma(a|s) = -log N(xi) + log|det df/dxi| + sum log(1 - a^2)``), exact where
``f(s, .)`` is one-to-one, averaged over draws; where the map folds (its Jacobian's sign changes among the draws), and
for a policy with no sampler network, the Kozachenko-Leonenko nearest-neighbour estimator on draws, in pre-tanh space
with the change of variables of the tanh (``squashed_entropy``). On a smooth density that estimator reads low: -0.06
nats at 64 draws in 3-D on known densities (tests/test_soft_returns.py), -0.07 to -0.09 on the exact ``pi_w`` of
``reach+avoid`` (bench/sampler_entropy.py). At a fold it reads high: +0.36 to +0.44 nats at 64 draws on the Fetch
``place`` samplers, against a 2^19-draw reference (bench/fold_entropy.py)."""

from __future__ import annotations

import math

import numpy as np
import torch

from skills.sql.equations import sampler_log_density
from skills.sql.seeding import seeded

ENTROPY_SAMPLES = 64  # draws per state
PAIRWISE_BUDGET = 1 << 24  # pairwise distances held at once (8 bytes each: 128 MiB)
DRAW_BUDGET = 1 << 20  # sampler draws per call (states x samples)


def nearest(samples: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each sample to its ``k``-th nearest other sample of the same set: [S, M, d] -> [S, M]."""
    dist = torch.cdist(samples, samples)  # [S, M, M]
    dist.diagonal(dim1=-2, dim2=-1).fill_(math.inf)  # not one's own neighbour
    return dist.kthvalue(k, dim=-1).values.clamp_min(1e-12)


def knn_entropy(samples: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Differential entropy of each set of samples by the Kozachenko-Leonenko estimator:
    ``H ≈ psi(M) - psi(k) + log c_d + (d/M) sum_i log r_i``, ``r_i`` the distance from sample ``i`` to its ``k``-th
    nearest neighbour, ``c_d`` the volume of the unit ``d``-ball. samples [S, M, d] -> [S] (nats)."""
    s, m, d = samples.shape
    per_chunk = max(1, PAIRWISE_BUDGET // (m * m))  # states whose [M, M] distances are held at once
    r = torch.cat([nearest(chunk.double(), k) for chunk in samples.split(per_chunk)]) if s else samples.new_zeros(0, m)
    return kozachenko_leonenko(r.log().mean(dim=-1), m, k, d).float()


def kozachenko_leonenko(mean_log_r, m: int, k: int, d: int):
    """The estimator's formula from the mean log distance to the ``k``-th neighbour among ``m`` draws in ``d`` dimensions:
    ``psi(m) - psi(k) + log c_d + d mean log r`` (a tensor or an array of any shape, elementwise)."""
    log_ball = (d / 2) * math.log(math.pi) - math.lgamma(d / 2 + 1)
    digamma = torch.digamma(torch.tensor([float(m), float(k)], dtype=torch.float64))
    return float(digamma[0] - digamma[1]) + log_ball + d * mean_log_r


def squashed_entropy(actions: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Entropy of actions ``a = tanh(u)`` on the box from draws [S, M, d]: ``knn_entropy`` of ``u = atanh(a)`` (an
    unbounded density, where the estimator is least biased) plus ``E sum_k log(1 - a_k^2)`` (the change of variables).
    -> [S] nats."""
    a = actions.double().clamp(-1 + 1e-7, 1 - 1e-7)
    return (knn_entropy(torch.atanh(a), k).double() + torch.log1p(-a.pow(2)).sum(-1).mean(-1)).float()


def policy_entropy(policy, obs: np.ndarray, samples: int = ENTROPY_SAMPLES, k: int = 1, seed: int = 0) -> np.ndarray:
    """``H(pi(.|s))`` at each state of ``obs`` [N, o] from ``samples`` draws of ``policy.sample`` (torch's global stream,
    seeded with ``seed`` and restored after): [N] nats."""
    out = []
    with seeded(seed):
        for chunk in np.array_split(obs, max(1, len(obs) // max(1, min(2048, DRAW_BUDGET // samples)))):
            draws = torch.as_tensor(np.asarray(policy.sample(chunk, samples)), dtype=torch.float32)
            out.append(squashed_entropy(draws, k).numpy())
    return np.concatenate(out).astype(np.float64)


def sampler_network(policy):
    """The amortized sampler network a skill or a composed policy acts with (``skills.sql.SamplerNetwork``), or None:
    for a policy without one, or one that acts with other draws (per-decision particles). A composition opened with
    ``compose.load`` acts through its ``policy``."""
    inner = getattr(policy, "policy", None)
    if isinstance(getattr(inner, "sampler", None), torch.nn.Module):
        policy = inner
    if getattr(policy, "particles", None) is not None:
        return None
    sampler = getattr(policy, "sampler", None)
    if sampler is None and hasattr(policy, "agent"):
        sampler = getattr(policy.agent, "sampler", None)
    return sampler if isinstance(sampler, torch.nn.Module) else None


def change_of_variables_entropy(sampler, obs: np.ndarray, samples: int = ENTROPY_SAMPLES,
                                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``H(sigma(.|s)) = -E log sigma(a|s)`` at each state of ``obs`` [N, o], the log-density of each of ``samples``
    draws by the change of variables (``skills.sql.sampler_log_density``; its own noise stream, seeded with ``seed``):
    exact where ``f(s, .)`` is one-to-one, an upper bound where it folds. -> (H [N] nats, folded [N]: the Jacobian's
    determinant changed sign among the draws, so ``f(s, .)`` folds there)."""
    generator = torch.Generator().manual_seed(int(seed))  # CPU noise, moved to the sampler's device
    device = next(sampler.parameters()).device
    o = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
    entropy, folded = [], []
    for chunk in o.split(max(1, DRAW_BUDGET // 16 // samples)):
        noise = torch.randn(len(chunk), samples, sampler.act_dim, generator=generator)
        log_p, sign = sampler_log_density(sampler, chunk.to(device), noise.to(device))
        entropy.append(-log_p.double().mean(-1).cpu())
        folded.append((sign.amin(-1) != sign.amax(-1)).cpu())
    return torch.cat(entropy).numpy(), torch.cat(folded).numpy()


def particle_policy(policy):
    """The composed policy inside ``policy`` when it acts with per-decision particles (SVGD at each step, or importance
    resampling: ``compose.policy.ComposedPolicy.particles``), else None."""
    inner = getattr(policy, "policy", policy)
    return inner if getattr(inner, "particles", None) is not None else None


def boltzmann_entropy(policy, obs: np.ndarray, seed: int = 0) -> np.ndarray:
    """``H = (V(s) - E_a Q(s, a)) / alpha`` at each state of ``obs`` [N, o], ``a`` the particles one decision draws
    (``policy.particles``) and ``V`` the policy's ``value``: the entropy of the Boltzmann policy of ``Q``, which
    per-decision particles target and whose draws have no density of their own. Where they miss it, this reads high
    by their ``KL`` to it (the credit the audit of issue 30 warns about), so reports say which credit was used. [N]."""
    with seeded(seed), torch.no_grad():
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        particles = policy.particles(o, None)  # [N, K, d]
        q = policy.q_fn(o.unsqueeze(1), particles).mean(dim=1)
        v = torch.as_tensor(np.asarray(policy.value(obs)), dtype=torch.float32)
    return ((v - q) / policy.alpha).double().numpy()


def acting_entropy(policy, obs: np.ndarray, samples: int = ENTROPY_SAMPLES, k: int = 1, seed: int = 0) -> np.ndarray:
    """``H(pi(.|s))`` of the policy that acts, at each state of ``obs`` [N, o]: by the change of variables through its
    sampler network when it acts with one (``change_of_variables_entropy``), and where that map folds, or for a policy
    without one, by the nearest-neighbour estimate (``policy_entropy``; its error, measured in the module's docstring,
    is low on smooth densities and high at folds). A composed policy acting with per-decision particles (whose draws
    have no density, and may repeat) is credited the Boltzmann entropy of its energy (``boltzmann_entropy``). -> [N]."""
    particles = particle_policy(policy)
    if particles is not None:
        return boltzmann_entropy(particles, obs, seed)
    network = sampler_network(policy)
    if network is None:
        return policy_entropy(policy, obs, samples, k, seed)
    entropy, folded = change_of_variables_entropy(network, obs, samples, seed)
    if folded.any():
        entropy[folded] = policy_entropy(policy, obs[folded], samples, k, seed)
    return entropy
