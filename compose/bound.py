"""The composition bound of Haarnoja et al. (2018), estimated in continuous actions.

``Q_w(s,a) >= Q*_w(s,a) >= Q_w(s,a) - C*(s,a)`` where ``C*`` is the fixed point of

    C(s,a) = gamma * E_{s'}[ delta(s') + max_{a'} C(s',a') ],
    delta(s) = sum_i w_i V_i(s) - V_w(s)        (tight form; the paper's D_1/2 form is looser).

Estimation, and where its errors come from (reported with every result):
* ``delta`` by uniform importance sampling with *common random numbers* across ``V_i`` and
  ``V_w`` (``n_value_samples`` per state): exact sign, finite-sample bias in both terms;
* ``C`` by TD on the constituents' stored transitions (only the states the skills saw), with a
  target network and ``max_{a'}`` taken over sampled actions (a lower estimate of the max);
* ``Q_i`` and the jointly trained ``Q_joint`` (standing in for ``Q*_w``) are themselves learned
  approximations, so the upper side ``Q_joint <= Q_w`` can fail by their errors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from skills.sql import SoftQNetwork, kernel_width, mixture_log_density, mixture_proposal, seeded, uniform_actions

from .composition import ComposedQ, Composition
from .td import td_fit


@dataclass(frozen=True)
class BoundConfig:
    """TD fit of the correction ``C``, run long enough to reach its fixed point.

    ``C`` converges like a value: after ``k`` backups (target copies) the initial error is scaled
    by ``gamma^k``. The fit takes ``k = ceil(log(tolerance) / log(gamma))`` backups of
    ``target_update_interval`` updates each (``updates`` overrides this). The default asks for
    ``gamma^k <= 1e-4``, twice the backups of ``1e-2``: early on, the max over sampled actions of a
    still-noisy fit overshoots the fixed point (by 24% at gamma = 0.95 on a constant ``delta``) and
    the overshoot then decays like any error. Measured on a constant ``delta``
    (tests/test_compose.py): within 2% of ``gamma delta / (1 - gamma)`` at gamma = 0.95 and 0.99.
    """

    tolerance: float = 1e-4  # gamma^backups: what is left of the initial error
    updates: int | None = None  # TD gradient steps; None: backups * target_update_interval
    target_update_interval: int = 25  # hard target-network copy every N steps (one backup)
    batch_size: int = 256  # transitions per step
    max_actions: int = 16  # actions sampled (uniformly) for max_{a'} C(s', a')
    n_value_samples: int = 512  # importance samples per state for delta (common random numbers)
    lr: float = 1e-3  # Adam learning rate
    hidden: tuple[int, ...] = (128, 128)  # C network widths
    seed: int = 0  # seeds initialisation and draws

    def backups(self, gamma: float) -> int:
        """Target copies needed for ``gamma^k <= tolerance``."""
        return max(1, math.ceil(math.log(self.tolerance) / math.log(gamma)))

    def total_updates(self, gamma: float) -> int:
        return self.updates if self.updates is not None else self.backups(gamma) * self.target_update_interval

    def to_dict(self) -> dict:
        return asdict(self) | {"hidden": list(self.hidden)}


def gap_on_states(q: ComposedQ, states: np.ndarray, n_samples: int, seed: int, chunk: int = 512) -> np.ndarray:
    """``delta(s)`` for every state (CRN importance sampling), chunked: [M, o] -> [M]."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, len(states), chunk):
            obs = torch.as_tensor(states[start:start + chunk], dtype=torch.float32)
            out.append(q.gap(obs, n_samples, generator))
    return torch.cat(out).numpy()


def correction_td_target(next_gap: torch.Tensor, next_max_c: torch.Tensor, terminated: torch.Tensor,
                         gamma: float) -> torch.Tensor:
    """``C_hat = gamma (1 - terminated) (delta(s') + max_a' C(s', a'))``: [B]."""
    return gamma * (1.0 - terminated) * (next_gap + next_max_c)


def policy_gap_td_target(next_gap: torch.Tensor, next_mean_d: torch.Tensor, terminated: torch.Tensor,
                         gamma: float) -> torch.Tensor:
    """``D_hat = gamma (1 - terminated) (delta(s') + E_{a' ~ pi} D(s', a'))``: [B].

    The acting policy's own gap, evaluated rather than maximised. With exact ``Q_i``, ``Q_w = r_w + gamma E[V_w(s') +
    delta(s')]`` and ``V_w(s') = E_{a'~pi}[Q_w(s', a') - alpha log pi_w(a'|s')]`` for any ``pi``, so
    ``Q_w - Q^pi = gamma E[delta(s') + alpha KL(pi || pi_w)(s') + E_{a'~pi} (Q_w - Q^pi)(s', a')]``. For the Boltzmann
    ``pi_w`` the KL is 0 and ``Q^{pi_w} = Q_w - D`` exactly; for another ``pi`` (an amortized sampler) ``Q_w - D``
    exceeds its ``Q^pi`` by its discounted KL to ``pi_w``. Since ``E_pi D <= max D``, ``D <= C*``, and for ``pi_w``
    ``Q*_w >= Q^{pi_w} = Q_w - D >= Q_w - C*``: the tighter lower bound on ``Q*_w``."""
    return gamma * (1.0 - terminated) * (next_gap + next_mean_d)


def boltzmann_draws(q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    centers: Callable[[torch.Tensor], torch.Tensor], alpha: float, proposals: int = 256,
                    generator: torch.Generator | None = None, uniform_share: float = 0.1
                    ) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A ``sample`` function for ``pi_w ∝ exp(Q_w/alpha)`` by sampling-importance-resampling from the defensive mixture
    around ``centers(obs)`` (e.g. 8 composed-sampler actions, [B, M, d]; ``uniform_share`` of it uniform): ``proposals``
    draws weighted by ``exp(Q_w/alpha) / q(a)`` (0 outside the box), ``n`` of them picked by those weights.
    obs [B, o], n -> [B, n, d]."""

    def sample(obs: torch.Tensor, n: int) -> torch.Tensor:
        c = centers(obs)
        width = kernel_width(c)
        acts = mixture_proposal(c, proposals, width, uniform_share, generator)
        inside = (acts.abs() <= 1.0).all(-1)
        log_w = q_fn(obs.unsqueeze(1), acts) / alpha - mixture_log_density(acts, c, width, uniform_share)
        weights = torch.softmax(torch.where(inside, log_w, torch.full_like(log_w, -math.inf)), dim=-1)
        pick = torch.multinomial(weights, n, replacement=True, generator=generator)
        return acts.gather(1, pick.unsqueeze(-1).expand(-1, -1, acts.shape[-1]))

    return sample


def policy_next_actions(sample: Callable[[torch.Tensor, int], torch.Tensor], next_obs: np.ndarray, draws: int,
                        chunk: int = 4096) -> torch.Tensor:
    """``draws`` actions of the acting policy at every next state, chunked: [M, o] -> [M, draws, d]."""
    with torch.no_grad():
        return torch.cat([sample(torch.as_tensor(next_obs[i:i + chunk], dtype=torch.float32), draws)
                          for i in range(0, len(next_obs), chunk)]).float()


def fit_correction(transitions: dict[str, np.ndarray], next_gap: np.ndarray, gamma: float,
                   obs_scale: torch.Tensor, config: BoundConfig = BoundConfig(),
                   next_actions: torch.Tensor | None = None) -> tuple[SoftQNetwork, dict]:
    """Learn ``C(s, a)`` by TD on stored transitions, given ``delta(s')`` at every next state.

    transitions: ``obs [M, o]``, ``action [M, d]``, ``next_obs [M, o]``, ``terminated [M]``;
    next_gap: ``delta(next_obs)`` [M]. No environment samples. ``next_actions`` [M, K, d]: draws of an acting policy
    at each next state; given, the fit is that policy's gap ``D`` (``policy_gap_td_target``, a mean over the draws)
    instead of ``C*`` (a max over ``config.max_actions`` uniform actions).
    """
    generator = torch.Generator().manual_seed(config.seed)
    with seeded(config.seed):  # the caller's torch stream is left as it was
        obs = torch.as_tensor(transitions["obs"], dtype=torch.float32)
        act = torch.as_tensor(transitions["action"], dtype=torch.float32)
        next_obs = torch.as_tensor(transitions["next_obs"], dtype=torch.float32)
        terminated = torch.as_tensor(transitions["terminated"], dtype=torch.float32)
        gap = torch.as_tensor(next_gap, dtype=torch.float32)
        obs_dim, act_dim = obs.shape[1], act.shape[1]
        c_net = SoftQNetwork(obs_dim, act_dim, config.hidden, obs_scale)

        def td_pair(idx, c_net, c_target):
            with torch.no_grad():
                if next_actions is not None:
                    next_mean = c_target(next_obs[idx].unsqueeze(1), next_actions[idx]).mean(dim=1)
                    target = policy_gap_td_target(gap[idx], next_mean, terminated[idx], gamma)
                else:
                    candidates = uniform_actions(config.batch_size, config.max_actions, act_dim, generator)
                    next_max = c_target(next_obs[idx].unsqueeze(1), candidates).max(dim=1).values
                    target = correction_td_target(gap[idx], next_max, terminated[idx], gamma)
            return c_net(obs[idx], act[idx]), target

        total = config.total_updates(gamma)
        fit = td_fit(c_net, td_pair, len(obs), updates=total, config=config, generator=generator, desc="bound C")
        with torch.no_grad():
            probe = torch.randperm(len(obs), generator=generator)[:2048]
            c_probe = c_net(obs[probe], act[probe])
    return c_net, {"gap_mean": float(gap.mean()), "gap_max": float(gap.max()),
                   "td_loss_last": fit["td_loss_last"] if fit["td_loss_last"] is not None else float("nan"),
                   "updates": total, "backups": fit["backups"], "gamma": gamma,
                   "C_mean_on_stored": float(c_probe.mean()),
                   "C_constant_delta_reference": float(gamma * gap.mean() / (1.0 - gamma))}


def fit_composition_correction(composition: Composition, config: BoundConfig = BoundConfig(),
                               sample: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
                               draws: int = 16, data: dict[str, np.ndarray] | None = None) -> tuple[SoftQNetwork, dict]:
    """``fit_correction`` on the constituents' stored transitions, with ``delta`` by CRN sampling: ``C*``, or with
    ``sample`` (obs [B, o], n -> [B, n, d]) the acting policy's gap ``D`` from ``draws`` of its actions per next state.
    ``data``: other transitions to fit on (``obs``, ``action``, ``next_obs``, ``terminated``; a diagnostic: the bound
    itself uses no environment samples)."""
    data = composition.transitions() if data is None else data
    next_gap = gap_on_states(composition.q_w, data["next_obs"], config.n_value_samples, config.seed)
    acts = policy_next_actions(sample, data["next_obs"], draws) if sample is not None else None
    return fit_correction(data, next_gap, composition.gamma, composition.parts[0].agent.q.obs_scale, config,
                          next_actions=acts)


@dataclass(frozen=True)
class PolicyGapConfig:
    """How ``E_{a'~pi_w}`` is drawn for the policy's own gap ``D`` (``policy_gap_td_target``): ``draws`` per next state by
    sampling-importance-resampling from ``proposals`` around ``centers`` composed-sampler actions (``boltzmann_draws``)."""

    draws: int = 16
    proposals: int = 256
    centers: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


def fit_policy_gap(composition: Composition, sampler, config: BoundConfig = BoundConfig(),
                   gap: PolicyGapConfig = PolicyGapConfig(), data: dict[str, np.ndarray] | None = None
                   ) -> tuple[SoftQNetwork, dict]:
    """``D`` of the Boltzmann ``pi_w`` of ``composition`` (``sampler``'s actions centring the resampling), fitted by TD
    on the constituents' stored transitions (or ``data``) with ``config``'s schedule, as ``C*`` is; and the fit's
    record."""
    generator = torch.Generator().manual_seed(config.seed)
    sample = boltzmann_draws(composition.q_w, lambda o: sampler.sample(o, gap.centers, generator=generator),
                             composition.alpha, gap.proposals, generator)
    start = time.perf_counter()
    d_net, info = fit_composition_correction(composition, config, sample, gap.draws, data)
    return d_net, info | {"wall_s": time.perf_counter() - start, **gap.to_dict()}


def check_bound(q_w: np.ndarray, c: np.ndarray, q_joint: np.ndarray) -> dict:
    """How often ``Q_w - C <= Q_joint <= Q_w`` holds on sampled pairs, and by how much it fails.

    Returns ``holds_fraction``, per-side failure fractions and mean violations, the mean slack
    of each side, ``mean_C`` and ``mean_gap`` (= mean of ``Q_w - Q_joint``, the measured gap).
    """
    upper_ok = q_joint <= q_w
    lower_ok = q_joint >= q_w - c
    upper_excess = np.maximum(q_joint - q_w, 0.0)
    lower_excess = np.maximum((q_w - c) - q_joint, 0.0)
    return {
        "pairs": int(len(q_w)),
        "holds_fraction": float(np.mean(upper_ok & lower_ok)),
        "upper_holds_fraction": float(np.mean(upper_ok)),
        "lower_holds_fraction": float(np.mean(lower_ok)),
        "upper_violation_mean": float(upper_excess[~upper_ok].mean()) if (~upper_ok).any() else 0.0,
        "lower_violation_mean": float(lower_excess[~lower_ok].mean()) if (~lower_ok).any() else 0.0,
        "upper_slack_mean": float(np.mean(q_w - q_joint)),
        "lower_slack_mean": float(np.mean(q_joint - (q_w - c))),
        "mean_C": float(np.mean(c)),
        "mean_gap": float(np.mean(q_w - q_joint)),
        "mean_Q_w": float(np.mean(q_w)),
        "mean_Q_joint": float(np.mean(q_joint)),
    }
