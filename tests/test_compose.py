"""Composition on analytic Q-functions (known answers), batching, and refusals."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from compose.bound import check_bound, fit_correction, gap_on_states
from compose.composition import ComposedQ, StackedQ, check_weights
from compose.sampling import ParticleConfig, ParticlePolicy, SamplerConfig, train_amortized_sampler
from skills.sql import SoftQNetwork

ALPHA, SIGMA = 0.5, 0.2
MEANS = torch.tensor([[0.35, -0.2], [-0.25, 0.3]])  # per-skill Gaussian modes in a 2-D action box


class GaussianQ(nn.Module):
    """State-independent ``Q_i(a) = -alpha |a - mu_i|^2 / (2 sigma^2) + c_i``, stacked: -> [N, ...].

    Each ``pi_i ∝ exp(Q_i/alpha)`` is N(mu_i, sigma^2 I) (the box truncates < 1e-3 of its mass).
    """

    def __init__(self, means: torch.Tensor, offsets: torch.Tensor):
        super().__init__()
        self.means, self.offsets = means, offsets

    def forward(self, obs, act):
        diff = act.unsqueeze(0) - self.means.view(-1, *([1] * (act.dim() - 1)), act.shape[-1])
        q = -ALPHA * diff.pow(2).sum(-1) / (2 * SIGMA**2)
        return q + self.offsets.view(-1, *([1] * (act.dim() - 1)))


def composed_gaussian(weights) -> ComposedQ:
    return ComposedQ(GaussianQ(MEANS, torch.tensor([0.3, -0.1])), torch.tensor(weights, dtype=torch.float32),
                     ALPHA, act_dim=2)


def product_mean(weights) -> torch.Tensor:
    """``prod_i pi_i^{w_i}`` of equal-variance Gaussians is N(sum_i w_i mu_i, sigma^2 I)."""
    return (torch.tensor(weights)[:, None] * MEANS).sum(0)


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.8, 0.2]])
def test_amortized_composed_sampler_matches_the_product_distribution(weights):
    q = composed_gaussian(weights)
    states = np.random.default_rng(0).normal(size=(512, 3)).astype(np.float32)
    sampler, _ = train_amortized_sampler(q, states, act_dim=2, alpha=ALPHA, obs_scale=torch.ones(3),
                                         config=SamplerConfig(updates=600, batch_size=32, hidden=(64, 64)))
    with torch.no_grad():
        a = torch.tanh(sampler(torch.as_tensor(states[:4]), torch.randn(4, 1000, 2))).reshape(-1, 2)
    torch.testing.assert_close(a.mean(0), product_mean(weights), atol=0.05, rtol=0)
    torch.testing.assert_close(a.std(0), torch.full((2,), SIGMA), atol=0.05, rtol=0)


def test_particle_svgd_matches_the_product_distribution():
    weights = [0.5, 0.5]
    policy = ParticlePolicy(composed_gaussian(weights), act_dim=2, alpha=ALPHA,
                            config=ParticleConfig(particles=64), seed=0)
    a = policy.particles(torch.zeros(4, 3)).reshape(-1, 2)
    torch.testing.assert_close(a.mean(0), product_mean(weights), atol=0.05, rtol=0)
    torch.testing.assert_close(a.std(0), torch.full((2,), SIGMA), atol=0.06, rtol=0)
    single = policy(np.zeros(3, np.float32))
    assert single.shape == (2,) and np.all(np.abs(single) <= 1)


def closed_form_gap(weights) -> float:
    """``delta = alpha * Var_w(mu) / (2 sigma^2)`` summed over action dims (offsets cancel)."""
    w = torch.tensor(weights)[:, None]
    var = (w * MEANS.pow(2)).sum(0) - (w * MEANS).sum(0).pow(2)
    return float(ALPHA * var.sum() / (2 * SIGMA**2))


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.7, 0.3]])
def test_gap_estimate_matches_closed_form_and_is_never_negative(weights):
    q = composed_gaussian(weights)
    gaps = gap_on_states(q, np.zeros((64, 3), np.float32), n_samples=4096, seed=0)
    assert np.all(gaps >= 0)  # common random numbers keep the estimate's sign exact
    assert np.mean(gaps) == pytest.approx(closed_form_gap(weights), rel=0.05)
    small = gap_on_states(q, np.zeros((64, 3), np.float32), n_samples=16, seed=0)
    assert np.all(small >= -1e-6)


@pytest.mark.learning
@pytest.mark.parametrize("gamma", [0.99, 0.95])
def test_td_correction_reaches_its_fixed_point_for_a_constant_gap(gamma):
    """With delta constant and no termination, C* = gamma delta / (1 - gamma) everywhere. The default
    schedule takes ceil(log 1e-4 / log gamma) backups (917 at gamma = 0.99), so C is neither truncated
    nor left on the early overshoot of the max over sampled actions of a noisy fit."""
    delta = closed_form_gap([0.5, 0.5])
    rng = np.random.default_rng(0)
    m = 4000
    data = {"obs": rng.normal(size=(m, 3)).astype(np.float32),
            "action": rng.uniform(-1, 1, size=(m, 2)).astype(np.float32),
            "next_obs": rng.normal(size=(m, 3)).astype(np.float32), "terminated": np.zeros(m, np.float32)}
    from compose.bound import BoundConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        c_net, info = fit_correction(data, np.full(m, delta, np.float32), gamma, torch.ones(3), BoundConfig(hidden=(32, 32)))
    finally:
        torch.set_num_threads(threads)
    assert info["backups"] == BoundConfig().backups(gamma) and gamma ** info["backups"] <= 1e-4
    with torch.no_grad():
        c = c_net(torch.as_tensor(data["obs"][:500]), torch.as_tensor(data["action"][:500])).numpy()
    closed_form = gamma * delta / (1 - gamma)
    # the max over sampled actions of a noisy fit biases C up a little (measured +1.5% at 0.95, +4.5% at
    # 0.99): conservative for the bound; a truncated fit would be far below (the old schedule: 13%)
    assert closed_form * 0.98 <= np.mean(c) <= closed_form * 1.1, (np.mean(c), closed_form)
    assert np.std(c) < 0.02 * np.mean(c)


def test_fitting_leaves_the_callers_torch_stream_as_it_was_and_fits_the_same_whatever_it_held():
    """A composition fitted (the sampler, ``C``, ``D``) or found in its cache must leave what a caller draws next the
    same: otherwise a benchmark's numbers depend on whether the cache existed. And each fit is seeded by its config,
    not by the stream it was called with."""
    from compose.bound import BoundConfig

    data, gap = chain_transitions(512, np.random.default_rng(0))
    states = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)

    def fits(stream_seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        torch.manual_seed(stream_seed)
        before = torch.get_rng_state()
        c_net, _ = fit_correction(data, gap, 0.5, torch.ones(1), BoundConfig(hidden=(8, 8), updates=20, batch_size=32))
        assert torch.equal(torch.get_rng_state(), before), "fit_correction moved the caller's stream"
        sampler, _ = train_amortized_sampler(composed_gaussian([0.5, 0.5]), states, act_dim=2, alpha=ALPHA,
                                             obs_scale=torch.ones(3),
                                             config=SamplerConfig(updates=5, batch_size=8, hidden=(8, 8)))
        assert torch.equal(torch.get_rng_state(), before), "train_amortized_sampler moved the caller's stream"
        return [p.detach().clone() for p in [*c_net.parameters(), *sampler.parameters()]], torch.rand(3)

    first, next_draws = fits(0)
    second, _ = fits(123)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    torch.manual_seed(0)
    assert torch.equal(next_draws, torch.rand(3))  # what the caller draws next is as if nothing had been fitted


def test_check_bound_counts_each_side():
    q_w = np.array([1.0, 1.0, 1.0, 1.0])
    c = np.array([0.5, 0.5, 0.5, 0.5])
    q_joint = np.array([0.8, 1.2, 0.3, 0.6])  # holds, above Q_w, below Q_w - C, holds
    result = check_bound(q_w, c, q_joint)
    assert result["holds_fraction"] == 0.5
    assert result["upper_holds_fraction"] == 0.75 and result["lower_holds_fraction"] == 0.75
    assert result["upper_violation_mean"] == pytest.approx(0.2)
    assert result["lower_violation_mean"] == pytest.approx(0.2)


def test_stacked_q_equals_each_network_including_different_widths():
    torch.manual_seed(0)
    nets = [SoftQNetwork(5, 2, (16, 16), torch.full((5,), 2.0)), SoftQNetwork(5, 2, (8, 24))]
    stacked = StackedQ(nets)
    obs, act = torch.randn(7, 1, 5), torch.rand(7, 4, 2) * 2 - 1
    out = stacked(obs, act)
    assert out.shape == (2, 7, 4)
    for i, net in enumerate(nets):
        torch.testing.assert_close(out[i], net(obs, act), atol=1e-5, rtol=1e-5)


def test_weights_default_equal_and_bad_weights_are_refused():
    np.testing.assert_allclose(check_weights(None, 3), [1 / 3] * 3)
    np.testing.assert_allclose(check_weights([0.7, 0.3], 2), [0.7, 0.3])
    with pytest.raises(ValueError, match="sum to 1.*0.667,0.333"):
        check_weights([2, 1], 2)
    with pytest.raises(ValueError, match="non-negative"):
        check_weights([1.5, -0.5], 2)
    with pytest.raises(ValueError, match=r"one weight per skill \(2\), got 1: \[1.0\]$"):  # plain numbers, no np.float64(...)
        check_weights([1.0], 2)


def test_skills_loaded_on_a_gpu_are_refused_with_their_devices():
    from types import SimpleNamespace

    from compose.composition import Composition

    parts = [SimpleNamespace(name="reach", device=torch.device("cuda", 0)),
             SimpleNamespace(name="avoid", device=torch.device("cpu"))]
    with pytest.raises(ValueError, match=r"runs on the CPU.*\(reach: cuda:0\)"):
        Composition(parts)


def chain_transitions(m: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """A two-state chain whose next state is the action's sign: s' = 1 if a > 0 else 0, delta(1) = 1, delta(0) = 0."""
    obs = rng.integers(0, 2, size=(m, 1)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(m, 1)).astype(np.float32)
    next_obs = (action > 0).astype(np.float32)
    return {"obs": obs, "action": action, "next_obs": next_obs, "terminated": np.zeros(m, np.float32)}, next_obs[:, 0]


@pytest.mark.learning
def test_the_policy_gap_evaluates_the_acting_policy_where_c_star_maximises():
    """gamma 0.5 on the chain: a policy that always steps to state 0 has D(., a > 0) = gamma delta(1) = 0.5 and
    D(., a < 0) = 0 (Q_w - Q^pi exactly), where C* maximises over the next action: C*(., a > 0) = gamma / (1 - gamma) = 1
    and C*(., a < 0) = 0.5. Fitted by the same TD on the same transitions, D <= C* with the gap each should have."""
    from compose.bound import BoundConfig

    data, gap = chain_transitions(4000, np.random.default_rng(0))
    config = BoundConfig(hidden=(32, 32), updates=3000, tolerance=1e-3)
    stay_low = torch.full((len(gap), 4, 1), -0.5)  # the acting policy's draws at each next state
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d_net, _ = fit_correction(data, gap, 0.5, torch.ones(1), config, next_actions=stay_low)
        c_net, _ = fit_correction(data, gap, 0.5, torch.ones(1), config)
    finally:
        torch.set_num_threads(threads)
    probe = torch.tensor([[0.0], [1.0], [0.0], [1.0]]), torch.tensor([[0.7], [0.7], [-0.7], [-0.7]])
    with torch.no_grad():
        d, c = d_net(*probe).numpy(), c_net(*probe).numpy()
    assert d == pytest.approx([0.5, 0.5, 0.0, 0.0], abs=0.06)
    assert c == pytest.approx([1.0, 1.0, 0.5, 0.5], abs=0.08)


def test_boltzmann_draws_follow_exp_q_over_alpha():
    """Resampled from the mixture around off-centre sampler actions, the draws of pi ∝ exp(Q/alpha) for
    Q = -alpha |a - mu|^2 / (2 sigma^2) have the Gaussian's mean and spread (sigma 0.2), not the centres'."""
    from compose.bound import boltzmann_draws

    mu = torch.tensor([0.3, -0.2])

    def q_fn(obs, act):
        return -ALPHA * (act - mu).pow(2).sum(-1) / (2 * SIGMA**2)

    generator = torch.Generator().manual_seed(0)
    sample = boltzmann_draws(q_fn, lambda o: torch.zeros(len(o), 8, 2) + 0.1, ALPHA, proposals=2048, generator=generator)
    draws = sample(torch.zeros(64, 3), 32).reshape(-1, 2)
    assert draws.mean(0).numpy() == pytest.approx(mu.numpy(), abs=0.03)
    assert draws.std(0).numpy() == pytest.approx([SIGMA, SIGMA], abs=0.03)
    assert draws.abs().max() <= 1.0


def test_log_volume_constant_in_composed_values():
    """Equal Q's compose to themselves: V_w = V_i and delta = 0."""
    same = ComposedQ(GaussianQ(MEANS[:1].repeat(2, 1), torch.tensor([0.2, 0.2])), torch.tensor([0.5, 0.5]),
                     ALPHA, act_dim=2)
    v_i, v_w = same.soft_values(torch.zeros(8, 3), 2048, torch.Generator().manual_seed(0))
    torch.testing.assert_close(v_w, v_i[0])
    expected = 0.2 + ALPHA * math.log(2 * math.pi * SIGMA**2)  # alpha log ∫ N-shaped exp over R^2
    assert float(v_w.mean()) == pytest.approx(expected, abs=0.03)
