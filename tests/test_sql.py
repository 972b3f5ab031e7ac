"""SQL pieces against known answers: soft value, kernel, SVGD, squashing, amortized sampler."""

import math

import pytest
import torch

from skills.sql import (
    SamplerNetwork,
    estimate_soft_value,
    kernel_width,
    mixture_log_density,
    rbf_bandwidth,
    rbf_kernel,
    sampler_surrogate_loss,
    soft_bellman_target,
    soft_value_from_samples,
    soft_value_importance,
    squashed_score,
    svgd_direction,
    uniform_actions,
)


def gaussian_mixture_score(means: torch.Tensor, std: float, weights: torch.Tensor):
    """log-density gradient of an isotropic Gaussian mixture; x [..., d] -> [..., d]."""

    def score(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        diff = x.unsqueeze(-2) - means  # [..., M, d]
        log_comp = -0.5 * diff.pow(2).sum(-1) / std**2 + torch.log(weights)
        (grad,) = torch.autograd.grad(torch.logsumexp(log_comp, -1).sum(), x)
        return grad

    return score


def run_plain_svgd(particles: torch.Tensor, score, steps: int, step_size: float) -> torch.Tensor:
    """Plain SVGD on one particle set: [K, d] -> [K, d] (batch of one state)."""
    x = particles.unsqueeze(0)
    for _ in range(steps):
        x = x + step_size * svgd_direction(x, score(x), x)
    return x[0]


# ---- soft value ---------------------------------------------------------------------------
def test_soft_value_of_constant_q_is_exact_log_volume():
    """For Q = c, V = alpha log ∫_{[-1,1]^d} exp(c/alpha) da = c + alpha d log 2, for any K_V."""
    for d in (1, 2, 3):
        q = torch.full((4, 7), 1.3)
        v = soft_value_from_samples(q, alpha=0.5, act_dim=d)
        torch.testing.assert_close(v, torch.full((4,), 1.3 + 0.5 * d * math.log(2)))


@pytest.mark.parametrize("d", [1, 2])
def test_importance_sampled_soft_value_matches_numerical_integration(d):
    alpha = 0.3
    centre = torch.tensor([0.4, -0.2][:d])

    def q_fn(a):
        return -2.0 * (a - centre).pow(2).sum(-1) + 0.5 * a[..., 0]

    grid_1d = torch.linspace(-1, 1, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[grid_1d] * d, indexing="ij"), -1).reshape(-1, d)
    cell = (2.0 / 800) ** d
    weights = torch.ones(len(grid), dtype=torch.float64)
    for k in range(d):  # trapezoid weights
        edge = (grid[:, k] == -1) | (grid[:, k] == 1)
        weights[edge] *= 0.5
    exact = alpha * torch.log((weights * torch.exp(q_fn(grid) / alpha)).sum() * cell)

    torch.manual_seed(0)
    samples = uniform_actions(1, 200_000, d)
    estimate = soft_value_from_samples(q_fn(samples).double(), alpha, d)[0]
    assert abs(float(estimate - exact)) < 0.01, (float(estimate), float(exact))


def box_gaussian_soft_value(mu: torch.Tensor, std: float, alpha: float) -> torch.Tensor:
    """Exact V for ``Q(a) = -alpha |a - mu|^2 / (2 std^2)`` on ``[-1, 1]^d`` (a product of erfs): mu [B, d] -> [B]."""
    lo, hi = (-1 - mu) / (std * math.sqrt(2)), (1 - mu) / (std * math.sqrt(2))
    per_dim = std * math.sqrt(math.pi / 2) * (torch.erf(hi) - torch.erf(lo))
    return alpha * torch.log(per_dim).sum(-1)


def test_mixture_density_is_normalised_on_the_box_and_matches_the_uniform_form():
    """``mixture_log_density`` integrates to 1 (Gaussians: over R^d, so in the box a bit less), and with
    ``lambda = 1`` the general estimator is SQL's uniform one exactly."""
    torch.manual_seed(0)
    centers = torch.tensor([[[0.2, -0.3], [-0.5, 0.1]]])
    width = torch.full((1, 1, 1), 0.3)
    grid_1d = torch.linspace(-4, 4, 401)
    grid = torch.stack(torch.meshgrid(grid_1d, grid_1d, indexing="ij"), -1).reshape(1, -1, 2)
    mass = mixture_log_density(grid, centers, width, 0.0).exp().sum() * (8 / 400) ** 2
    assert float(mass) == pytest.approx(1.0, abs=1e-3)
    a = uniform_actions(3, 50, 2)
    q = -a.pow(2).sum(-1)
    log_q = mixture_log_density(a, centers.expand(3, -1, -1), width.expand(3, -1, -1), 1.0)
    torch.testing.assert_close(soft_value_importance(q, log_q, a, 0.4), soft_value_from_samples(q, 0.4, 2))


@pytest.mark.parametrize("d", [1, 3])
def test_mixture_proposal_is_unbiased_and_beats_uniform_on_peaked_q(d):
    """On a peaked Q (alpha = 0.05, policy std 0.1) with known V, 16 mixture samples centred on an
    imperfect sampler (30% too wide) are as accurate as 1024 uniform ones; 16 uniform ones are biased."""
    torch.manual_seed(0)
    alpha, std, batch = 0.05, 0.1, 2000
    mu = torch.rand(batch, 1, d) * 1.6 - 0.8

    def q_fn(obs, a):
        return -alpha * (a - mu).pow(2).sum(-1) / (2 * std**2)

    exact = box_gaussian_soft_value(mu[:, 0], std, alpha)
    obs = torch.zeros(batch, 1)
    centers = (mu + 1.3 * std * torch.randn(batch, 8, d)).clamp(-1, 1)
    mixture = estimate_soft_value(q_fn, obs, 16, alpha, d, centers) - exact
    uniform_16 = estimate_soft_value(q_fn, obs, 16, alpha, d) - exact
    uniform_1024 = estimate_soft_value(q_fn, obs, 1024, alpha, d) - exact
    assert abs(float(mixture.mean())) < 0.01 and float(mixture.std()) < 0.03
    assert abs(float(mixture.mean())) <= abs(float(uniform_1024.mean())) + 0.005
    if d == 3:
        assert float(uniform_16.mean()) < -0.2  # the Jensen bias the mixture removes
    # more samples shrink what is left, as an unbiased estimate's log should
    more = estimate_soft_value(q_fn, obs, 256, alpha, d, centers) - exact
    assert abs(float(more.mean())) < 0.002


def test_kernel_width_follows_the_centres_spread():
    tight = torch.zeros(2, 8, 3) + 0.01 * torch.randn(2, 8, 3)
    wide = torch.rand(2, 8, 3) * 2 - 1
    assert torch.all(kernel_width(tight) == 0.05) and torch.all(kernel_width(wide) > 0.2)
    assert kernel_width(wide).shape == (2, 1, 1)


def test_soft_bellman_target_bootstraps_unless_terminated():
    r, v = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0])
    target = soft_bellman_target(r, torch.tensor([0.0, 1.0]), v, gamma=0.9)
    torch.testing.assert_close(target, torch.tensor([2.8, 1.0]))


# ---- kernel ---------------------------------------------------------------------------------
def test_kernel_and_bandwidth_match_hand_computed_values():
    x = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])  # fixed, K_fixed = 3
    y = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # updated
    # squared distances x_j to y_i: [[2, 0], [1, 1], [2, 4]]; median of {0,1,1,2,2,4} = 1 (lower)
    k, h = rbf_kernel(x, y)
    torch.testing.assert_close(h, torch.full((1, 1, 1), 1.0 / math.log(3)))
    torch.testing.assert_close(k, torch.exp(-torch.tensor([[[2.0, 0.0], [1.0, 1.0], [2.0, 4.0]]]) / h))
    torch.testing.assert_close(rbf_bandwidth(torch.zeros(2, 3, 3), 3), torch.full((2, 1, 1), 1e-3))


def test_svgd_direction_equals_the_pairwise_sum_of_eq_13():
    """phi(y_i) = mean_j [k(x_j, y_i) score_j + grad_{x_j} k(x_j, y_i)], term by term."""
    torch.manual_seed(0)
    x, score, y = torch.randn(2, 5, 3), torch.randn(2, 5, 3), torch.randn(2, 4, 3)
    k, h = rbf_kernel(x, y)
    expected = torch.zeros(2, 4, 3)
    for b in range(2):
        for i in range(4):
            for j in range(5):
                grad_k = -2.0 * (x[b, j] - y[b, i]) / h[b, 0, 0] * k[b, j, i]
                expected[b, i] += (k[b, j, i] * score[b, j] + grad_k) / 5
    torch.testing.assert_close(svgd_direction(x, score, y), expected, rtol=1e-5, atol=1e-6)


def test_bandwidth_is_per_state_not_per_batch():
    near = torch.zeros(1, 4, 4) + 0.1
    far = torch.zeros(1, 4, 4) + 10.0
    h = rbf_bandwidth(torch.cat([near, far]), 4)
    assert h[0].item() == pytest.approx(0.1 / math.log(4))
    assert h[1].item() == pytest.approx(10.0 / math.log(4))


# ---- SVGD as plain particles -----------------------------------------------------------------
def test_svgd_particles_match_1d_gaussian_mixture():
    means, std, w = torch.tensor([[-2.0], [2.0]]), 0.5, torch.tensor([0.5, 0.5])
    torch.manual_seed(0)
    x = run_plain_svgd(torch.randn(80, 1) * 0.5, gaussian_mixture_score(means, std, w), 800, 0.05)
    left = (x[:, 0] < 0).float().mean().item()
    assert 0.35 <= left <= 0.65  # both modes covered, about equally
    assert x[:, 0].mean().abs().item() < 0.3  # mixture mean 0
    assert x[:, 0].var().item() == pytest.approx(4.0 + std**2, rel=0.2)  # mixture variance 4.25
    for side in (x[x[:, 0] < 0, 0], x[x[:, 0] > 0, 0]):
        assert side.std().item() == pytest.approx(std, rel=0.35)


def test_svgd_particles_match_2d_gaussian_mixture():
    # Finite-particle SVGD cannot carry mass between well-separated modes, so the modes'
    # shares follow the initial draw; a broad start lets every mode get its share.
    means = torch.tensor([[-1.5, -1.0], [1.5, -1.0], [0.0, 1.5]])
    w, std = torch.ones(3) / 3, 0.5
    torch.manual_seed(1)
    x = run_plain_svgd(torch.randn(90, 2) * 1.5, gaussian_mixture_score(means, std, w), 600, 0.05)
    nearest = torch.cdist(x, means).argmin(-1)
    shares = torch.bincount(nearest, minlength=3).float() / len(x)
    assert torch.all((shares > 0.2) & (shares < 0.47)), shares  # every mode covered, roughly equally
    torch.testing.assert_close(x.mean(0), (w[:, None] * means).sum(0), atol=0.3, rtol=0)
    mixture_cov = (w[:, None, None] * (torch.einsum("mi,mj->mij", means, means) + std**2 * torch.eye(2))).sum(0)
    mixture_cov -= torch.outer((w[:, None] * means).sum(0), (w[:, None] * means).sum(0))
    torch.testing.assert_close(torch.cov(x.T).diagonal(), mixture_cov.diagonal(), atol=0.35, rtol=0)


@pytest.mark.parametrize("d", [1, 2])
def test_squashed_svgd_matches_known_density_on_the_box(d):
    """SVGD in u-space with the tanh change of variables samples pi(a) ∝ exp(Q(a)/alpha) on the box."""
    alpha = 0.5
    centre = torch.tensor([0.6, -0.3][:d])

    def q_fn(a):
        return -1.5 * (a - centre).pow(2).sum(-1)

    def score(u):
        a = torch.tanh(u).detach().requires_grad_(True)
        (dq,) = torch.autograd.grad(q_fn(a).sum(), a)
        return squashed_score(u, dq, alpha)

    torch.manual_seed(2)
    u = run_plain_svgd(torch.randn(120, d) * 0.3, score, 600, 0.05)
    a = torch.tanh(u)
    g = torch.linspace(-1, 1, 401, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[g] * d, indexing="ij"), -1).reshape(-1, d)
    p = torch.exp(q_fn(grid) / alpha)
    p /= p.sum()
    exact_mean = (p[:, None] * grid).sum(0)
    exact_std = ((p[:, None] * (grid - exact_mean) ** 2).sum(0)).sqrt()
    torch.testing.assert_close(a.mean(0).double(), exact_mean, atol=0.05, rtol=0)
    torch.testing.assert_close(a.std(0).double(), exact_std, atol=0.06, rtol=0)


def test_squashed_score_is_gradient_of_change_of_variables_density():
    u = torch.randn(5, 3, requires_grad=True)
    q_fn = lambda a: (a * torch.tensor([0.3, -1.0, 2.0])).sum(-1)  # noqa: E731
    log_p = q_fn(torch.tanh(u)) / 0.7 + torch.log(1 - torch.tanh(u) ** 2).sum(-1)
    (expected,) = torch.autograd.grad(log_p.sum(), u)
    a = torch.tanh(u).detach().requires_grad_(True)
    (dq,) = torch.autograd.grad(q_fn(a).sum(), a)
    torch.testing.assert_close(squashed_score(u.detach(), dq, 0.7), expected)


# ---- the amortized sampler ------------------------------------------------------------------------
def test_amortized_sampler_learns_both_modes_of_a_bimodal_q():
    torch.manual_seed(0)
    alpha = 0.1
    sampler = SamplerNetwork(obs_dim=1, act_dim=1, hidden=(64, 64))
    optimizer = torch.optim.Adam(sampler.parameters(), lr=3e-3)

    def q_fn(a):  # modes at a = -0.6 and a = +0.5
        return torch.logsumexp(torch.stack([-((a + 0.6) / 0.12) ** 2, -((a - 0.5) / 0.12) ** 2]), 0).sum(-1) * 0.5

    obs = torch.zeros(32, 1)
    for _ in range(600):
        noise = torch.randn(32, 16, 1)
        with torch.no_grad():
            fixed_u = sampler(obs, noise[:, :8])
        updated_u = sampler(obs, noise[:, 8:])
        a = torch.tanh(fixed_u).requires_grad_(True)
        (dq,) = torch.autograd.grad(q_fn(a).sum(), a)
        phi = svgd_direction(fixed_u, squashed_score(fixed_u, dq, alpha), updated_u.detach())
        optimizer.zero_grad()
        sampler_surrogate_loss(phi, updated_u).backward()
        optimizer.step()
    actions = sampler.sample(torch.zeros(1, 1), 2000)[0, :, 0]
    near_left = ((actions + 0.6).abs() < 0.25).float().mean().item()
    near_right = ((actions - 0.5).abs() < 0.25).float().mean().item()
    assert near_left > 0.2 and near_right > 0.2, (near_left, near_right)
    assert near_left + near_right > 0.8
