"""Soft Q-learning (Haarnoja, Tang, Abbeel, Levine, ICML 2017), one function per equation.

Notation: temperature ``alpha``, discount ``gamma``, action box ``[-1, 1]^d``, batch ``B``,
value samples ``K_V``, sampler particles ``K = K_fixed + K_updated``.

Squashing: the sampler outputs ``u = f(s, xi)`` and acts with ``a = tanh(u)``. SVGD runs
entirely in **u-space** (kernel, particles, gradients) on the density of ``u`` implied by
``pi(a|s) ∝ exp(Q(s,a)/alpha)`` on the box:

    log p(u) = Q(s, tanh u) / alpha + sum_k log(1 - tanh(u_k)^2)        (change of variables)
    grad_u log p(u) = (1 - a^2) * dQ/da / alpha - 2 a                     (a = tanh u)

so there is no mixing of spaces (softlearning issue #143) and no ``eps`` in the Jacobian.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from . import backprop


# ---- networks -------------------------------------------------------------------------------
def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """ReLU MLP ``in_dim -> hidden... -> out_dim`` (linear output)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def split_first_layer(layer: nn.Linear, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``layer(cat([state, x]))`` without building the concatenation: ``W_s state + W_x x + b``.

    state [..., 1 or K, s] broadcasts against x [..., K, d], so a state's projection is computed
    once for all of its K actions (or noise draws): [..., K, width].
    """
    n = state.shape[-1]
    return F.linear(state, layer.weight[:, :n], layer.bias) + F.linear(x, layer.weight[:, n:])


class ScaledMLP(Protocol):
    """A network made of one ``mlp`` (``net``) with its observations scaled by ``obs_scale``: ``SoftQNetwork``,
    ``SamplerNetwork`` (and ``skills.sql.many_skills.ComposedSoftQNetwork``, whose ``net`` is its residual's)."""

    @property
    def net(self) -> nn.Sequential: ...

    @property
    def obs_scale(self) -> torch.Tensor: ...


class SoftQNetwork(nn.Module):
    """``Q(s, a)``: obs [..., obs_dim], act [..., act_dim] -> [...]. Inputs scaled by ``obs_scale``."""

    net: nn.Sequential
    obs_scale: torch.Tensor  # a buffer [obs_dim]

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], obs_scale: torch.Tensor | None = None):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, hidden, 1)
        self.register_buffer("obs_scale", torch.ones(obs_dim) if obs_scale is None else obs_scale.float().clone())

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """obs [..., obs_dim] broadcast against act [..., d] (e.g. obs [B, 1, o] with act [B, K, d])."""
        return self.net[1:](split_first_layer(cast(nn.Linear, self.net[0]), obs * self.obs_scale, act)).squeeze(-1)

    def traced(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, backprop.Activations]:
        """``forward`` without autograd, saving activations for ``backprop``: obs [N, o], act [G, N, d] -> [G, N]."""
        q, acts = backprop.forward(self.net, obs * self.obs_scale, act)
        return q.squeeze(-1), acts

    def action_gradient(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``dQ(s, a)/da`` (the score's Q term in SQL Eq. 13): obs [N, o], act [G, N, d] -> [G, N, d]."""
        _, acts = self.traced(obs, act)
        return backprop.input_gradient(self.net, acts, act.shape[0])


class SamplerNetwork(nn.Module):
    """Amortized SVGD sampler ``u = f(s, xi) = xi + g(s, xi)``, ``xi ~ N(0, I_d)``; actions ``tanh(u)``.

    The residual noise path is our change to the reference network: a fresh MLP barely
    depends on ``xi`` (output std 0.01-0.13), so every particle starts in one basin and the
    sampler collapses onto one mode of a bimodal Q. With ``xi`` passed through, the untrained
    sampler covers the box (std ~0.6) and keeps both modes (docs/skills.md, tests/test_sql.py).
    """

    net: nn.Sequential
    obs_scale: torch.Tensor  # a buffer [obs_dim]

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], obs_scale: torch.Tensor | None = None):
        super().__init__()
        self.act_dim = act_dim
        self.net = mlp(obs_dim + act_dim, hidden, act_dim)
        self.register_buffer("obs_scale", torch.ones(obs_dim) if obs_scale is None else obs_scale.float().clone())

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Pre-tanh particles: obs [B, obs_dim], noise [B, K, d] -> u [B, K, d]."""
        first = cast(nn.Linear, self.net[0])
        return noise + self.net[1:](split_first_layer(first, (obs * self.obs_scale).unsqueeze(-2), noise))

    def traced(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, backprop.Activations]:
        """``forward`` without autograd, saving activations for ``backprop``: obs [N, o], noise [G, N, d] -> u [G, N, d]."""
        out, acts = backprop.forward(self.net, obs * self.obs_scale, noise)
        return noise + out, acts

    def sample(self, obs: torch.Tensor, n: int, generator: torch.Generator | None = None,
               generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Actions ``tanh(f(s, xi))``: obs [B, obs_dim] -> [B, n, d]. ``generators``: one per row, each row's noise
        drawn from its own stream (``row_noise``), so a row's actions do not depend on the other rows."""
        if generators is not None:
            noise = row_noise(generators, (n, self.act_dim), obs.device)
        else:
            noise = torch.randn(obs.shape[0], n, self.act_dim, generator=generator, device=obs.device)
        return torch.tanh(self(obs, noise))


def row_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device | str = "cpu"
              ) -> torch.Tensor:
    """Standard normal noise [B, *shape], row ``b`` drawn from ``generators[b]`` (CPU streams): what a row draws is the
    same whichever rows are batched with it, as episodes stepped in lockstep need."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


def row_uniform(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device | str = "cpu"
                ) -> torch.Tensor:
    """Uniform noise on [0, 1) [B, *shape], row ``b`` drawn from ``generators[b]`` (as ``row_noise``)."""
    return torch.stack([torch.rand(shape, generator=g) for g in generators]).to(device)


def sampler_log_density(sampler: SamplerNetwork, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's own log-density at its draws ``a = tanh(u)``, ``u = f(s, xi)``, by the change of variables:

        log sigma(a|s) = log N(xi; 0, I) - log |det df(s, xi)/dxi| - sum_k log(1 - a_k^2)

    exact where ``f(s, .)`` is one-to-one; where it folds (other ``xi`` reach the same ``u``) the true density is the
    sum over those preimages, so this is a lower bound on ``log sigma`` (an upper bound on the entropy).
    obs [B, o], noise [B, K, d] -> (log sigma [B, K], the sign of the Jacobian's determinant [B, K])."""
    d = noise.shape[-1]
    u, jacobian = sampler_jacobian(sampler, obs, noise)
    sign, log_det = torch.linalg.slogdet(jacobian.double())  # [B, K]
    u = u.double()
    log_normal = -0.5 * noise.double().pow(2).sum(-1) - 0.5 * d * math.log(2.0 * math.pi)
    log_squash = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)  # log(1 - tanh(u)^2), stably
    return (log_normal - log_det - log_squash).float(), sign.float()


@torch.no_grad()
def sampler_jacobian(sampler: SamplerNetwork, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``u = f(s, xi)`` and ``df(s, xi)/dxi = I + dg/dxi`` at every draw: obs [B, o], noise [B, K, d] -> (u [B, K, d],
    Jacobian [B, K, d, d], ``[..., i, j] = du_i/dxi_j``). The hand-written backward passes of ``backprop`` (one per
    output) for the ``SamplerNetwork`` MLP; autograd for any other sampler module."""
    b, k, d = noise.shape
    if isinstance(sampler, SamplerNetwork):
        u, acts = sampler.traced(obs, noise.transpose(0, 1))  # group-major: [K, B, d]
        g = backprop.input_jacobian(sampler.net, acts).view(k, b, d, d)
        return u.transpose(0, 1), (g + torch.eye(d, dtype=g.dtype, device=g.device)).transpose(0, 1)
    with torch.enable_grad():
        xi = noise.detach().requires_grad_(True)
        u = sampler(obs, xi)
        rows = [torch.autograd.grad(u[..., i].sum(), xi, retain_graph=i < d - 1)[0] for i in range(d)]
    return u.detach(), torch.stack(rows, dim=-2)


# ---- soft value and Bellman target ------------------------------------------------------------
def uniform_actions(batch: int, n: int, act_dim: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Importance samples from the uniform proposal on ``[-1, 1]^d``: [B, n, d]."""
    return torch.rand(batch, n, act_dim, generator=generator, device=device) * 2.0 - 1.0


def soft_value_from_samples(q_values: torch.Tensor, alpha: float, act_dim: int) -> torch.Tensor:
    """Importance-sampled soft value with a uniform proposal (SQL Eq. 10).

    ``V(s) = alpha * log ∫ exp(Q(s,a)/alpha) da
           ≈ alpha * (logsumexp_j Q(s,a_j)/alpha - log K_V + d log 2)``,  a_j ~ U[-1,1]^d.
    ``d log 2`` is the log-volume of the box. q_values [B, K_V] -> [B].
    """
    k_v = q_values.shape[-1]
    return alpha * (torch.logsumexp(q_values / alpha, dim=-1) - math.log(k_v) + act_dim * math.log(2.0))


def kernel_width(centers: torch.Tensor, low: float = 0.05, high: float = 0.5) -> torch.Tensor:
    """Per-state Gaussian width for ``mixture_proposal``: Scott's rule ``std M^(-1/(d+4))`` over the
    centers, clamped to ``[low, high]``. centers [B, M, d] -> sigma [B, 1, 1]."""
    m, d = centers.shape[1], centers.shape[2]
    spread = centers.std(dim=1).mean(-1) if m > 1 else torch.full(centers.shape[:1], high, device=centers.device)
    return (spread * m ** (-1.0 / (d + 4))).clamp(low, high).view(-1, 1, 1)


def mixture_proposal(centers: torch.Tensor, n: int, width: torch.Tensor, uniform_share: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws from the defensive mixture ``q(a) = lambda U[-1,1]^d + (1 - lambda) mean_m N(a; c_m, sigma^2 I)``.

    centers [B, M, d] (e.g. sampler actions, which approximate ``pi`` itself), ``sigma = width``
    [B, 1, 1] (``kernel_width``), ``lambda = uniform_share`` -> samples [B, n, d]. Gaussian draws may leave the box; their
    integrand is 0 there (``soft_value_importance`` masks them), so the estimate stays unbiased.
    """
    batch, m, d = centers.shape
    device = centers.device
    pick = torch.randint(m, (batch, n), generator=generator, device=device)
    near = centers.gather(1, pick.unsqueeze(-1).expand(batch, n, d))
    near = near + width * torch.randn(batch, n, d, generator=generator, device=device)
    uniform = uniform_actions(batch, n, d, generator, device)
    use_uniform = torch.rand(batch, n, 1, generator=generator, device=device) < uniform_share
    return torch.where(use_uniform, uniform, near)


def mixture_log_density(actions: torch.Tensor, centers: torch.Tensor, width: torch.Tensor,
                        uniform_share: float) -> torch.Tensor:
    """``log q(a)`` of ``mixture_proposal``: actions [B, n, d], centers [B, M, d], width [B, 1, 1] -> [B, n]."""
    d = actions.shape[-1]
    sq = torch.cdist(actions, centers).pow(2)  # [B, n, M]
    var = width.pow(2)  # [B, 1, 1]
    log_gauss = (torch.logsumexp(-sq / (2 * var), dim=-1) - math.log(centers.shape[1])
                 - 0.5 * d * torch.log(2 * math.pi * var[..., 0]))
    log_uniform = torch.full_like(log_gauss, -d * math.log(2.0))
    if uniform_share >= 1.0:
        return log_uniform
    return torch.logaddexp(log_uniform + math.log(uniform_share), log_gauss + math.log1p(-uniform_share)) \
        if uniform_share > 0 else log_gauss


def soft_value_importance(q_values: torch.Tensor, log_proposal: torch.Tensor, actions: torch.Tensor,
                          alpha: float) -> torch.Tensor:
    """Importance-sampled soft value with any proposal ``q`` (SQL Eq. 10, general form).

    ``V(s) = alpha log ∫_box exp(Q/alpha) da ≈ alpha (logsumexp_j [Q_j/alpha - log q(a_j)] - log n)``;
    samples outside ``[-1, 1]^d`` carry weight 0. With the uniform proposal, ``log q = -d log 2``
    and this is ``soft_value_from_samples``. q_values, log_proposal [B, n], actions [B, n, d] -> [B].
    """
    inside = (actions.abs() <= 1.0).all(-1)
    log_w = torch.where(inside, q_values / alpha - log_proposal, torch.full_like(q_values, -math.inf))
    return alpha * (torch.logsumexp(log_w, dim=-1) - math.log(q_values.shape[-1]))


def estimate_soft_value(q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], obs: torch.Tensor, n_samples: int,
                        alpha: float, act_dim: int, centers: torch.Tensor | None = None, uniform_share: float = 0.1,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``V(s) = alpha log ∫ exp(Q(s,a)/alpha) da`` by importance sampling: obs [B, o] -> [B].

    ``centers`` [B, M, d] (sampler actions) select the mixture proposal (``mixture_proposal``);
    without them the proposal is uniform on the box (SQL Eq. 10).
    """
    if centers is None:
        actions = uniform_actions(len(obs), n_samples, act_dim, generator=generator, device=obs.device)
        return soft_value_from_samples(q_fn(obs.unsqueeze(1), actions), alpha, act_dim)
    width = kernel_width(centers)
    actions = mixture_proposal(centers, n_samples, width, uniform_share, generator)
    log_q = mixture_log_density(actions, centers, width, uniform_share)
    return soft_value_importance(q_fn(obs.unsqueeze(1), actions), log_q, actions, alpha)


def project_soft_value(value: torch.Tensor, v_min: float, v_max: float) -> torch.Tensor:
    """``clip(V(s'), V_min, V_max)``: the soft value projected onto its analytic interval. [(S,) B] -> same.

    Every soft value on ``[-1, 1]^d`` lies in ``[V_min, V_max] = [(r_min + alpha d log 2)/(1 - gamma),
    (r_max + alpha d log 2)/(1 - gamma)]`` (Eq. 10 bounded by the uniform density and by ``max_a Q``). Clipping is
    1-Lipschitz in the sup norm and leaves ``V*`` in place, so the projected soft Bellman operator is still a
    ``gamma``-contraction with the same fixed point ``Q*``; it only stops an importance-sampled overestimate past the
    ceiling from being bootstrapped (the value run-away of ``avoid``, whose values sit at the ceiling).
    """
    return value.clamp(v_min, v_max)


def soft_bellman_target(reward: torch.Tensor, terminated: torch.Tensor, next_value: torch.Tensor,
                        gamma: float) -> torch.Tensor:
    """``Q_hat = r + gamma (1 - terminated) V(s')``; bootstraps through time-limit truncation. [B]."""
    return reward + gamma * (1.0 - terminated) * next_value


def soft_q_loss(q: torch.Tensor, q_hat: torch.Tensor) -> torch.Tensor:
    """``J_Q = mean_B 0.5 (Q_hat - Q)^2`` (SQL Eq. 11); ``q_hat`` carries no gradient.

    q, q_hat [(S,) B] -> scalar, or [S] for S stacked networks (one loss each).
    """
    return 0.5 * (q_hat.detach() - q).pow(2).mean(-1)


def soft_q_loss_gradient(q: torch.Tensor, q_hat: torch.Tensor) -> torch.Tensor:
    """``dJ_Q/dQ = (Q - Q_hat) / B`` of ``soft_q_loss``: [(S,) B] -> [(S,) B]."""
    return (q - q_hat) / q.shape[-1]


# ---- SVGD -------------------------------------------------------------------------------------
def rbf_bandwidth(sq_dist: torch.Tensor, n_fixed: int) -> torch.Tensor:
    """Adaptive bandwidth ``h = median(|x - y|^2) / log(K_fixed)``, floored at 1e-3, detached.

    sq_dist [B, K_fixed, K_updated] -> h [B, 1, 1]: one bandwidth per state, over the particle
    pairs of that state (never over the batch).
    """
    median = sq_dist.flatten(1).median(dim=1).values
    h = median / math.log(max(n_fixed, 2))
    return h.clamp_min(1e-3).detach().view(-1, 1, 1)


def rbf_kernel(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RBF kernel ``k(x, y) = exp(-|x - y|^2 / h)`` with the adaptive bandwidth ``h``.

    x [B, Kx, d] (fixed particles), y [B, Ky, d] (updated particles) -> k [B, Kx, Ky], h [B, 1, 1].
    """
    sq_dist = torch.cdist(x, y).pow(2)  # [B, Kx, Ky]
    h = rbf_bandwidth(sq_dist, x.shape[1])
    return torch.exp(-sq_dist / h), h


def svgd_direction(fixed: torch.Tensor, grad_log_p: torch.Tensor, updated: torch.Tensor) -> torch.Tensor:
    """Stein variational direction at the updated particles (SQL Eq. 13).

    ``phi(y_i) = mean_j [ k(x_j, y_i) grad_{x_j} log p(x_j) + grad_{x_j} k(x_j, y_i) ]``, with the
    kernel gradient ``grad_x k(x, y) = -2 (x - y) / h k(x, y)`` summed in closed form:
    ``sum_j grad_{x_j} k(x_j, y_i) = (2/h) (y_i sum_j k_ji - sum_j k_ji x_j)``, so that both terms
    are one batched matmul with ``k^T``.
    fixed x [B, Kf, d], grad_log_p [B, Kf, d], updated y [B, Ku, d] -> phi [B, Ku, d].
    """
    k, h = rbf_kernel(fixed, updated)
    k_t = k.transpose(1, 2)  # [B, Ku, Kf]
    drive_and_pull = torch.bmm(k_t, grad_log_p - (2.0 / h) * fixed)  # sum_j k_ji (score_j - 2 x_j / h)
    push = (2.0 / h) * updated * k_t.sum(-1, keepdim=True)  # (2/h) y_i sum_j k_ji
    return (drive_and_pull + push) / fixed.shape[1]


def squashed_score(u: torch.Tensor, dq_da: torch.Tensor, alpha: float) -> torch.Tensor:
    """``grad_u log p(u) = (1 - tanh(u)^2) dQ/da / alpha - 2 tanh(u)``: [..., d] -> [..., d]."""
    a = torch.tanh(u)
    return (1.0 - a * a) * dq_da / alpha - 2.0 * a


def q_action_gradient(q_net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], obs: torch.Tensor,
                      actions: torch.Tensor) -> torch.Tensor:
    """``dQ(s, a)/da`` at fixed particles, no parameter gradients: [B, K, d] -> [B, K, d]."""
    actions = actions.detach().requires_grad_(True)
    with torch.enable_grad():
        q = q_net(obs.unsqueeze(-2), actions)
        (grad,) = torch.autograd.grad(q.sum(), actions)
    return grad


def sampler_surrogate_loss(phi: torch.Tensor, updated_u: torch.Tensor) -> torch.Tensor:
    """``-(phi.detach() * u_i)``: its gradient moves the sampler's parameters along ``phi`` (SQL Eq. 14).

    phi [(S,) B, Ku, d] (a constant), updated_u [(S,) B, Ku, d] (depends on the sampler) -> scalar, or [S].
    """
    return -(phi.detach() * updated_u).sum(-1).flatten(-2).mean(-1)


def svgd_step_direction(q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], obs: torch.Tensor,
                        fixed_u: torch.Tensor, updated_u: torch.Tensor, alpha: float) -> torch.Tensor:
    """SVGD direction at ``updated_u`` scored under ``q_fn`` at ``fixed_u``, with autograd for ``dQ/da``.

    obs [B, o], fixed_u [B, Kf, d], updated_u [B, Ku, d] -> phi [B, Ku, d].
    """
    score = squashed_score(fixed_u, q_action_gradient(q_fn, obs, torch.tanh(fixed_u)), alpha)
    return svgd_direction(fixed_u, score, updated_u)


def sampler_svgd_loss(sampler: nn.Module, q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      obs: torch.Tensor, noise: torch.Tensor, n_fixed: int, alpha: float) -> torch.Tensor:
    """The SVGD surrogate of SQL Eqs. 13-14 with autograd: the noise draws [B, K, d] split into
    ``n_fixed`` fixed particles (scored under Q, no gradient) and updated ones (moved along phi)."""
    with torch.no_grad():
        fixed_u = sampler(obs, noise[:, :n_fixed])
    updated_u = sampler(obs, noise[:, n_fixed:])
    return sampler_surrogate_loss(svgd_step_direction(q_fn, obs, fixed_u, updated_u.detach(), alpha), updated_u)


def sampler_surrogate_gradient(phi: torch.Tensor) -> torch.Tensor:
    """``d/du`` of ``sampler_surrogate_loss``: ``-phi / (B K_u)``, [(S,) B, Ku, d] -> [(S,) B, Ku, d]."""
    return -phi / (phi.shape[-3] * phi.shape[-2])
