"""Soft returns scored with the acting policy's own entropy (issue 30): the entropy estimator on densities whose
entropy is known, the Metropolis-Hastings Boltzmann sampler on a known energy, and the random actor's soft return
estimated against its exact one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compose.soft_returns import BoltzmannPolicy, reflect, uniform_actor
from skills.evaluation.entropy import change_of_variables_entropy, knn_entropy, squashed_entropy
from skills.policy import UniformPolicy
from skills.sql import SamplerNetwork, sampler_log_density


def test_the_entropy_estimator_on_known_densities():
    """Uniform on the box (3 log 2) through the squashed estimator, and Gaussians directly, averaged over 400 states of
    64 draws each (what the check uses): within 0.1 nats."""
    torch.manual_seed(0)
    uniform = torch.rand(400, 64, 3) * 2 - 1
    assert squashed_entropy(uniform).mean().item() == pytest.approx(3 * math.log(2), abs=0.1)
    for sigma in (0.05, 0.3):
        gauss = torch.randn(400, 64, 3) * sigma
        assert knn_entropy(gauss, 1).mean().item() == pytest.approx(1.5 * math.log(2 * math.pi * math.e * sigma**2), abs=0.1)
    # a squashed Gaussian: its entropy from the change of variables, with the Jacobian averaged over many draws
    u = torch.randn(400, 64, 3) * 0.5 + 0.3
    exact = 1.5 * math.log(2 * math.pi * math.e * 0.25) + torch.log1p(-torch.tanh(torch.randn(200_000, 3) * 0.5 + 0.3)
                                                                        .pow(2)).sum(-1).mean().item()
    assert squashed_entropy(torch.tanh(u)).mean().item() == pytest.approx(exact, abs=0.1)


def folding_sampler(obs_dim: int, d: int) -> SamplerNetwork:
    """A sampler with ``u = xi - 2 relu(xi) = -|xi|`` per coordinate: two noise values reach every ``u`` (a fold)."""
    net = SamplerNetwork(obs_dim, d, (d, d))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.net[0].weight[:, obs_dim:] = torch.eye(d)
        net.net[2].weight.copy_(torch.eye(d))
        net.net[4].weight.copy_(-2 * torch.eye(d))
    return net


def test_the_samplers_log_density_by_the_change_of_variables():
    """Exact where the sampler's map is one-to-one: ``u = xi`` gives the squashed Gaussian's density to 1e-5, and a
    random sampler's entropy agrees with the nearest-neighbour estimate on 4,096 draws; where the map folds, the flag is
    raised and the change of variables overstates the entropy by exactly what the fold merges (``d log 2`` here)."""
    torch.manual_seed(0)
    obs = torch.randn(6, 4)
    identity = SamplerNetwork(4, 2, (16, 16))
    with torch.no_grad():
        for p in identity.parameters():
            p.zero_()
    xi = torch.randn(6, 32, 2)
    log_p, sign = sampler_log_density(identity, obs, xi)
    expected = (-0.5 * xi.pow(2).sum(-1) - math.log(2 * math.pi) - torch.log1p(-torch.tanh(xi).pow(2)).sum(-1))
    torch.testing.assert_close(log_p, expected, atol=1e-5, rtol=1e-5)
    assert bool((sign == 1).all())
    sampler = SamplerNetwork(4, 2, (32, 32))
    by_change, folded = change_of_variables_entropy(sampler, obs.numpy(), 4096, seed=1)
    with torch.no_grad():
        knn = squashed_entropy(sampler.sample(obs, 4096)).numpy()
    assert not folded.any()
    np.testing.assert_allclose(by_change, knn, atol=0.05)
    fold = folding_sampler(4, 2)
    by_change, folded = change_of_variables_entropy(fold, obs.numpy(), 4096, seed=1)
    with torch.no_grad():
        knn = squashed_entropy(fold.sample(obs, 4096)).numpy()
    assert folded.all()
    np.testing.assert_allclose(by_change - knn, 2 * math.log(2), atol=0.08)


def test_reflection_keeps_values_in_the_box_and_is_symmetric():
    x = torch.linspace(-7, 7, 1001)
    y = reflect(x)
    assert y.min() >= -1 and y.max() <= 1
    torch.testing.assert_close(reflect(-x), -y)


def test_the_metropolis_hastings_policy_samples_a_known_boltzmann_density():
    """Energy ``Q(a) = -alpha |a - mu|^2 / (2 s^2)``: ``pi`` is a Gaussian (mean mu, std s) well inside the box."""
    alpha, mu, s = 0.05, torch.tensor([0.3, -0.2]), 0.1

    def energy(obs, act):
        return -alpha * ((act - mu) ** 2).sum(-1) / (2 * s**2)

    start = UniformPolicy(2)
    policy = BoltzmannPolicy(energy, alpha, start, steps=200)
    torch.manual_seed(1)
    draws = policy.act(np.zeros((4000, 1), np.float32))
    np.testing.assert_allclose(draws.mean(0), mu.numpy(), atol=0.01)
    np.testing.assert_allclose(draws.std(0), [s, s], rtol=0.1)


def test_the_uniform_actor_is_credited_its_exact_entropy():
    actor = uniform_actor(3, 0.05)
    assert actor.credit(np.zeros((5, 12)), np.zeros((5, 3))) == pytest.approx(np.full(5, 0.05 * 3 * math.log(2)))


def test_the_acting_entropy_uses_the_network_the_policy_acts_with(tmp_path):
    """A skill and a composed policy are credited through their own sampler network, agreeing with the nearest-neighbour
    estimate on many draws (which reads a little low); a policy with no network, or acting with other draws, falls back
    to the estimate."""
    from library_helpers import shipped_library

    import skills
    from compose.policy import ComposedPolicy
    from skills.evaluation.entropy import acting_entropy, policy_entropy, sampler_network

    library = shipped_library(tmp_path / "lib", ("reach",))
    skill = skills.load("reach", library=str(library))
    assert sampler_network(skill) is skill.agent.sampler
    assert sampler_network(UniformPolicy(3)) is None
    obs = skill.transitions["obs"][:: max(1, len(skill.transitions["obs"]) // 24)][:24]
    by_change = acting_entropy(skill, obs, 64)
    estimate = policy_entropy(skill, obs, 1024)
    assert abs(float(np.mean(by_change - estimate))) < 0.1
    assert np.all(np.isfinite(by_change))
    with_particles = ComposedPolicy.__new__(ComposedPolicy)
    with_particles.sampler, with_particles.particles = skill.agent.sampler, lambda o, g: o
    assert sampler_network(with_particles) is None
