"""The SQL learner: soft Q-network, target network, amortized SVGD sampler and their updates."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from . import backprop
from .equations import (
    SamplerNetwork,
    SoftQNetwork,
    estimate_soft_value,
    project_soft_value,
    sampler_surrogate_gradient,
    sampler_surrogate_loss,
    soft_bellman_target,
    soft_q_loss,
    soft_q_loss_gradient,
    squashed_score,
    svgd_direction,
)
from .many_skills import ComposedSoftQNetwork

VALUE_PROPOSALS = ("uniform", "mixture")
# the counts of SQLConfig and their bounds (inclusive): a saved manifest asking for more is refused at load, before
# anything is allocated (a manifest's eval_particles of 2e9 would otherwise ask for 16 GB at the first act)
COUNT_LIMITS = {"batch_size": (1, 16_384), "value_samples": (1, 4096), "proposal_centers": (1, 256),
                "particles": (1, 1024), "eval_particles": (1, 4096), "target_update_interval": (1, 10**9),
                "buffer_size": (1, 10**8), "warmup_steps": (0, 10**9), "updates_per_step": (1, 64)}
MAX_HIDDEN_LAYERS, MAX_HIDDEN_WIDTH = 16, 8192
# the real-valued settings: (low, high, whether low itself is allowed)
NUMBER_LIMITS = {"alpha": (0.0, math.inf, False), "gamma": (0.0, 1.0, True), "q_lr": (0.0, 1.0, False),
                 "sampler_lr": (0.0, 1.0, False), "proposal_uniform_share": (0.0, 1.0, True),
                 "fixed_fraction": (0.0, 1.0, True), "obs_scale": (0.0, math.inf, False),
                 "random_episodes": (0.0, 1.0, True)}


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite; the networks keep their last finite weights."""

    members: list[int]  # set by stacked training: the seeds (stack members) that diverged


def torch_device(name: str | torch.device) -> torch.device:
    """``torch.device(name)``, or a ``ValueError`` that says why this machine cannot use it."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown torch device {str(name)!r} ({err}); use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r}: torch {torch.__version__} sees no CUDA device here "
                         "(torch.cuda.is_available() is False); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(name)!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


@dataclass(frozen=True)
class SQLConfig:
    """Soft Q-learning hyperparameters (reference defaults unless noted in docs/skills.md)."""

    alpha: float = 1.0  # temperature: pi(a|s) ∝ exp(Q(s,a)/alpha); the knob that matters most
    gamma: float = 0.99  # discount
    hidden: tuple[int, ...] = (128, 128)  # hidden widths of the Q and sampler MLPs (ReLU)
    q_lr: float = 3e-4  # Adam learning rate of the soft Q-network
    sampler_lr: float = 3e-4  # Adam learning rate of the sampler
    batch_size: int = 128  # transitions per update
    value_samples: int = 16  # K_V: importance samples for the soft value target
    value_proposal: str = "uniform"  # "uniform" on the box, or "mixture": sampler-centred Gaussians + uniform
    proposal_centers: int = 8  # M sampler actions per next state that centre the mixture proposal
    proposal_uniform_share: float = 0.1  # lambda: the mixture's uniform share (keeps the estimate unbiased)
    particles: int = 16  # K: sampler particles per state for SVGD
    fixed_fraction: float = 0.5  # share of the K particles held fixed (they score; the rest move)
    target_update_interval: int = 1000  # hard copy of Q into the target network every N updates
    obs_scale: float = 1.0  # observations are multiplied by this inside both networks
    buffer_size: int = 1_000_000  # replay capacity (capped at the training steps)
    warmup_steps: int = 1000  # uniform random actions before the first update
    random_episodes: float = 0.0  # share of later episodes acted uniformly at random (off-policy exploration)
    updates_per_step: int = 1  # gradient updates per environment step
    eval_particles: int = 32  # candidates for deterministic actions (argmax of Q among samples)
    cache_target_values: bool = True  # reuse V_target(s') of a transition until the target network changes
    clip_target_value: bool = False  # project V_target(s') onto the task's analytic soft-value interval (Eq. 10 bounds)

    @property
    def n_fixed(self) -> int:
        return max(1, int(round(self.particles * self.fixed_fraction)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SQLConfig":
        d = dict(d)
        d["hidden"] = tuple(d["hidden"])
        d.setdefault("cache_target_values", False)  # skills saved before the cache existed
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown SQL hyperparameters {sorted(unknown)}; valid: {[f.name for f in fields(cls)]}")
        return cls(**d)

    def __post_init__(self) -> None:
        """Every field checked: counts are whole numbers within ``COUNT_LIMITS``, hidden widths within
        ``MAX_HIDDEN_LAYERS`` x ``MAX_HIDDEN_WIDTH``, real settings finite within ``NUMBER_LIMITS`` (alpha > 0): an
        invalid value is a ``ValueError`` naming the field, so it never reaches a training run or a saved version."""
        if not isinstance(self.value_proposal, str) or self.value_proposal not in VALUE_PROPOSALS:
            raise ValueError(f"unknown value_proposal={self.value_proposal!r}; valid: {', '.join(VALUE_PROPOSALS)}")
        bad = [f"{k}={getattr(self, k)!r} (a whole number in [{lo}, {hi}])" for k, (lo, hi) in COUNT_LIMITS.items()
               if not (type(getattr(self, k)) is int and lo <= getattr(self, k) <= hi)]
        for k, (lo, hi, closed) in NUMBER_LIMITS.items():
            v = getattr(self, k)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v <= hi
            if not (ok and (v >= lo if closed else v > lo)):
                bad.append(f"{k}={v!r} (a finite number {'>=' if closed else '>'} {lo}" + (f", <= {hi})" if hi < math.inf
                                                                                           else ")"))
        hidden = self.hidden
        if not (isinstance(hidden, tuple) and 1 <= len(hidden) <= MAX_HIDDEN_LAYERS
                and all(type(h) is int and 1 <= h <= MAX_HIDDEN_WIDTH for h in hidden)):
            bad.append(f"hidden={hidden!r} (1 to {MAX_HIDDEN_LAYERS} widths, each a whole number in [1, {MAX_HIDDEN_WIDTH}])")
        bad += [f"{k}={getattr(self, k)!r} (true or false)" for k in ("cache_target_values", "clip_target_value")
                if not isinstance(getattr(self, k), bool)]
        if bad:
            raise ValueError("invalid SQL hyperparameters: " + "; ".join(bad))


class TargetValueCache:
    """``V_target(s')`` per stored transition, valid until the target network is next copied.

    The target network is frozen for ``target_update_interval`` updates, so a transition's
    soft value target only changes with its importance samples. Each transition is valued once
    per target period (one draw of ``K_V`` samples) and reused: with batch 128 and period 1000,
    a 30k-transition buffer is valued about 4x less often, and a small one far less.
    Entries are keyed by buffer slot and checked against the transition's id, so a slot that
    the replay ring has overwritten is recomputed.
    """

    def __init__(self, device: torch.device):
        self.period = -1
        self.ids = torch.empty(0, dtype=torch.long, device=device)
        self.values = torch.empty(0, device=device)

    def lookup(self, period: int, index: torch.Tensor, ids: torch.Tensor, compute) -> torch.Tensor:
        """Values for slots ``index`` [B] holding transitions ``ids`` [B]; ``compute(mask) -> [n]``
        values the rows of the batch selected by the boolean ``mask`` [B] (the misses)."""
        miss = self.misses(period, index, ids)
        if bool(miss.any()):
            self.store(index, ids, miss, compute(miss))
        return self.values[index]

    def misses(self, period: int, index: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Which rows of the batch need a fresh value: [B] bool (all of them in a new target period)."""
        if period != self.period:
            self.ids.fill_(-1)
            self.period = period
        size = int(index.max()) + 1
        if size > len(self.ids):
            grow = max(size, 2 * len(self.ids))
            self.ids = torch.cat([self.ids, self.ids.new_full((grow - len(self.ids),), -1)])
            self.values = torch.cat([self.values, self.values.new_zeros(grow - len(self.values))])
        return self.ids[index] != ids

    def store(self, index: torch.Tensor, ids: torch.Tensor, miss: torch.Tensor, values: torch.Tensor) -> None:
        """Keep ``values`` [n] of the missed rows (``miss`` [B]) for the rest of the period."""
        slots = index[miss]
        keep = last_of_each(slots)  # a slot drawn twice is written once: deterministic on a GPU too
        written = slots[keep]
        self.values[written] = values[keep]
        self.ids[written] = ids[miss][keep]


def last_of_each(keys: torch.Tensor) -> torch.Tensor:
    """Positions of the last occurrence of each distinct value in ``keys`` [n] -> [n_distinct].

    Writing only these makes ``x[keys] = v`` well defined with repeated keys: on the CPU it
    equals the sequential last-write-wins, while a GPU leaves the winner unspecified.
    """
    sorted_keys, order = torch.sort(keys, stable=True)
    last = torch.ones_like(sorted_keys, dtype=torch.bool)
    last[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    return order[last]


def target_value_in_range(learner, next_value: torch.Tensor) -> torch.Tensor:
    """``V_target(s')`` [(S,) B] projected onto the learner's ``value_range`` when its config asks for it
    (``clip_target_value``); unchanged otherwise. ``learner``: a ``SoftQLearning`` or a stacked one."""
    if not learner.config.clip_target_value:
        return next_value
    if learner.value_range is None:
        raise ValueError("clip_target_value is set but the learner has no value_range: the trainer sets it from the task's "
                         "reward range (skills.evaluation.diagnostics.soft_value_bounds)")
    return project_soft_value(next_value, *learner.value_range)


def apply_gradients(learner, q_grads: list[torch.Tensor], sampler_grads: list[torch.Tensor]) -> None:
    """One Adam step of the Q-network and of the sampler with these gradients, then count the update and copy Q
    into the target network every ``target_update_interval`` updates. ``learner``: a ``SoftQLearning`` or a
    ``skills.sql.many_seeds.StackedSoftQLearning`` (stacked parameters, the same schedule)."""
    for optimizer, net, grads in ((learner.q_optimizer, learner.q, q_grads),
                                  (learner.sampler_optimizer, learner.sampler, sampler_grads)):
        for param, grad in zip(net.parameters(), grads, strict=False):
            param.grad = grad
        optimizer.step()
    learner.updates += 1
    if learner.updates % learner.config.target_update_interval == 0:
        learner.q_target.load_state_dict(learner.q.state_dict())


class SoftQLearning:
    """Networks, optimizers and one update step of SQL."""

    def __init__(self, obs_dim: int, act_dim: int, config: SQLConfig, device: str | torch.device = "cpu",
                 q: SoftQNetwork | ComposedSoftQNetwork | None = None):
        """``q``: another soft Q-network to train (e.g. ``skills.sql.many_skills.ComposedSoftQNetwork``); it must answer
        ``forward``, ``traced``, ``action_gradient`` and expose its trained MLP as ``net``. Default: an MLP."""
        self.config, self.obs_dim, self.act_dim = config, obs_dim, act_dim
        self.device = torch_device(device)
        scale = torch.full((obs_dim,), float(config.obs_scale))
        self.q = (SoftQNetwork(obs_dim, act_dim, config.hidden, scale) if q is None else q).to(self.device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.sampler = SamplerNetwork(obs_dim, act_dim, config.hidden, scale).to(self.device)
        # fused: one kernel per parameter group instead of ~10 small ops per tensor
        self.q_optimizer = torch.optim.Adam(self.q.parameters(), lr=config.q_lr, fused=True)
        self.sampler_optimizer = torch.optim.Adam(self.sampler.parameters(), lr=config.sampler_lr, fused=True)
        self.updates = 0
        self.target_values = TargetValueCache(self.device)
        # (V_min, V_max) of the task (``skills.evaluation.diagnostics.soft_value_bounds``), set by the trainer: with
        # ``clip_target_value`` the soft value target is projected onto it (``project_soft_value``)
        self.value_range: tuple[float, float] | None = None

    # ---- losses ----
    @torch.no_grad()
    def target_soft_value(self, next_obs: torch.Tensor) -> torch.Tensor:
        """``V_target(s')`` from ``K_V`` importance samples: next_obs [n, obs_dim] -> [n]."""
        return self.soft_value(self.q_target, next_obs, self.config.value_samples)

    @torch.no_grad()
    def soft_value(self, q_net: torch.nn.Module, obs: torch.Tensor, n_samples: int,
                   generator: torch.Generator | None = None, proposal: str | None = None) -> torch.Tensor:
        """``V(s) = alpha log ∫ exp(Q(s,a)/alpha) da`` of ``q_net`` by importance sampling with the
        configured proposal (``value_proposal``, or ``proposal``): obs [n, obs_dim] -> [n]."""
        cfg = self.config
        centers = None
        if (proposal or cfg.value_proposal) == "mixture":
            centers = self.sampler.sample(obs, cfg.proposal_centers, generator=generator)  # [n, M, d]
        return estimate_soft_value(q_net, obs, n_samples, cfg.alpha, self.act_dim, centers,
                                   cfg.proposal_uniform_share, generator)

    def next_state_value(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``V_target(s')`` for a batch [B]: cached per transition when the batch names its buffer slots."""
        if not (self.config.cache_target_values and "index" in batch):
            return self.target_soft_value(batch["next_obs"])
        period = self.updates // self.config.target_update_interval
        return self.target_values.lookup(period, batch["index"], batch["id"],
                                         lambda miss: self.target_soft_value(batch["next_obs"][miss]))

    def q_loss_and_gradients(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Soft Bellman residual ``J_Q`` (SQL Eq. 11) and ``dJ_Q/dθ_Q``, with an importance-sampled
        soft value of the target network."""
        next_value = target_value_in_range(self, self.next_state_value(batch))
        q_hat = soft_bellman_target(batch["reward"], batch["terminated"], next_value, self.config.gamma)
        q, acts = self.q.traced(batch["obs"], batch["action"].unsqueeze(0))
        q = q[0]
        grads = backprop.parameter_gradients(self.q.net, acts, soft_q_loss_gradient(q, q_hat).unsqueeze(-1))
        return soft_q_loss(q, q_hat), grads

    def sampler_loss_and_gradients(self, obs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """SVGD surrogate (SQL Eqs. 13-14) and the sampler's gradient along it: one draw of K
        particles per state, split into fixed (scored under Q) and updated (moved along phi)."""
        cfg, n_fixed, batch = self.config, self.config.n_fixed, len(obs)
        noise = torch.randn(batch, cfg.particles, self.act_dim, device=self.device)
        u, acts = self.sampler.traced(obs, noise.transpose(0, 1))  # [K, B, d], particle-major
        fixed_u, updated_u = u[:n_fixed], u[n_fixed:]
        dq_da = self.q.action_gradient(obs, torch.tanh(fixed_u))  # [K_fixed, B, d]
        score = squashed_score(fixed_u, dq_da, cfg.alpha)
        phi = svgd_direction(fixed_u.transpose(0, 1), score.transpose(0, 1), updated_u.transpose(0, 1))  # [B, Ku, d]
        grad_u = sampler_surrogate_gradient(phi).transpose(0, 1).reshape(-1, self.act_dim)  # [Ku*B, d]
        grads = backprop.parameter_gradients(self.sampler.net, acts.rows(n_fixed * batch, len(acts.x)), grad_u)
        return sampler_surrogate_loss(phi, updated_u.transpose(0, 1)), grads

    # ---- one update ----
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step on Q and on the sampler; raises ``TrainingDiverged`` on a non-finite loss.

        Gradients come from ``backprop`` (hand-written, checked against autograd in the tests).
        """
        q_loss, q_grads = self.q_loss_and_gradients(batch)
        sampler_loss, sampler_grads = self.sampler_loss_and_gradients(batch["obs"])
        if not (torch.isfinite(q_loss) and torch.isfinite(sampler_loss)):
            raise TrainingDiverged(
                f"non-finite loss at update {self.updates} (q_loss={float(q_loss)}, "
                f"sampler_loss={float(sampler_loss)}); try a larger alpha or a smaller learning rate")
        apply_gradients(self, q_grads, sampler_grads)
        return {"q_loss": q_loss, "sampler_loss": sampler_loss}

    # ---- acting ----
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False,
            generators: Sequence[torch.Generator] | None = None) -> np.ndarray:
        """One action per observation: obs [obs_dim] or [B, obs_dim] -> [act_dim] or [B, act_dim].

        Stochastic: a sampler draw. Deterministic: the highest-Q of ``eval_particles`` draws. The noise comes from
        torch's global stream, or with ``generators`` from one stream per row (``SamplerNetwork.sample``).
        """
        single = np.ndim(obs) == 1
        o = torch.as_tensor(np.atleast_2d(obs), dtype=torch.float32, device=self.device)
        if deterministic:
            candidates = self.sampler.sample(o, self.config.eval_particles, generators=generators)  # [B, N, d]
            best = self.q(o.unsqueeze(1), candidates).argmax(dim=1)
            actions = candidates[torch.arange(len(o)), best]
        else:
            actions = self.sampler.sample(o, 1, generators=generators)[:, 0]
        out = actions.cpu().numpy()
        return out[0] if single else out
