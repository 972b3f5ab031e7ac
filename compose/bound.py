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

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch

from skills.sql import SoftQNetwork, uniform_actions

from .composition import ComposedQ, Composition


@dataclass(frozen=True)
class BoundConfig:
    """TD fit of the correction ``C``."""

    updates: int = 3000  # TD gradient steps
    batch_size: int = 256  # transitions per step
    max_actions: int = 32  # actions sampled (uniformly) for max_{a'} C(s', a')
    n_value_samples: int = 512  # importance samples per state for delta (common random numbers)
    lr: float = 1e-3  # Adam learning rate
    target_update_interval: int = 250  # hard target-network copy every N steps
    hidden: tuple[int, ...] = (128, 128)  # C network widths
    seed: int = 0  # seeds initialisation and draws

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


def fit_correction(transitions: dict[str, np.ndarray], next_gap: np.ndarray, gamma: float,
                   obs_scale: torch.Tensor, config: BoundConfig = BoundConfig()) -> tuple[SoftQNetwork, dict]:
    """Learn ``C(s, a)`` by TD on stored transitions, given ``delta(s')`` at every next state.

    transitions: ``obs [M, o]``, ``action [M, d]``, ``next_obs [M, o]``, ``terminated [M]``;
    next_gap: ``delta(next_obs)`` [M]. No environment samples.
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    obs = torch.as_tensor(transitions["obs"], dtype=torch.float32)
    act = torch.as_tensor(transitions["action"], dtype=torch.float32)
    next_obs = torch.as_tensor(transitions["next_obs"], dtype=torch.float32)
    terminated = torch.as_tensor(transitions["terminated"], dtype=torch.float32)
    gap = torch.as_tensor(next_gap, dtype=torch.float32)
    obs_dim, act_dim = obs.shape[1], act.shape[1]
    c_net = SoftQNetwork(obs_dim, act_dim, config.hidden, obs_scale)
    c_target = copy.deepcopy(c_net).requires_grad_(False)
    optimizer = torch.optim.Adam(c_net.parameters(), lr=config.lr)
    losses = []
    for step in range(1, config.updates + 1):
        idx = torch.randint(len(obs), (config.batch_size,), generator=generator)
        with torch.no_grad():
            candidates = uniform_actions(config.batch_size, config.max_actions, act_dim, generator)
            next_max = c_target(next_obs[idx].unsqueeze(1), candidates).max(dim=1).values
            target = correction_td_target(gap[idx], next_max, terminated[idx], gamma)
        loss = 0.5 * (c_net(obs[idx], act[idx]) - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % config.target_update_interval == 0:
            c_target.load_state_dict(c_net.state_dict())
        if step % 100 == 0:
            losses.append(float(loss.detach()))
    return c_net, {"gap_mean": float(gap.mean()), "gap_max": float(gap.max()),
                   "td_loss_last": losses[-1] if losses else float("nan")}


def fit_composition_correction(composition: Composition, config: BoundConfig = BoundConfig()) -> tuple[SoftQNetwork, dict]:
    """``fit_correction`` on the constituents' stored transitions, with ``delta`` by CRN sampling."""
    data = composition.transitions()
    next_gap = gap_on_states(composition.q, data["next_obs"], config.n_value_samples, config.seed)
    return fit_correction(data, next_gap, composition.gamma, composition.parts[0].agent.q.obs_scale, config)


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
