"""S seeds of one skill trained side by side: their SQL updates as one chain of batched ops.

``StackedSoftQLearning`` runs S independent learners (one per seed) whose networks are stacked along a leading
axis; ``skills.training`` drives it when ``python -m skills.train TASK --seeds ...`` asks for several seeds.
(N *skills* evaluated in one call are another kind of stacking: ``skills.sql.many_skills``.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from . import backprop
from .equations import (
    ScaledMLP,
    SoftQNetwork,
    kernel_width,
    mixture_log_density,
    mixture_proposal,
    sampler_surrogate_gradient,
    sampler_surrogate_loss,
    soft_bellman_target,
    soft_q_loss,
    soft_q_loss_gradient,
    soft_value_from_samples,
    soft_value_importance,
    squashed_score,
    svgd_direction,
    uniform_actions,
)
from .learner import SoftQLearning, TargetValueCache, TrainingDiverged, apply_gradients, target_value_in_range


class StackedMLP(nn.Module):
    """S ``sql.mlp`` networks of one shape as stacked parameters: ``weight{l}`` [S, out, in], ``bias{l}`` [S, out].

    Registered in ``nn.Sequential``'s parameter order (W_1, b_1, W_2, ...), so ``backprop`` differentiates all
    S at once and one Adam serves them: Adam is elementwise, so one optimizer over the stacks is S independent ones.
    """

    def __init__(self, nets: Sequence[nn.Sequential]):
        super().__init__()
        per_net = [backprop.linear_layers(net) for net in nets]
        shapes = [[(layer.out_features, layer.in_features) for layer in layers] for layers in per_net]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"stacked networks must share one shape; got {shapes}")
        self.depth = len(shapes[0])
        for d in range(self.depth):
            self.register_parameter(f"weight{d}", nn.Parameter(torch.stack([ls[d].weight.detach() for ls in per_net])))
            self.register_parameter(f"bias{d}", nn.Parameter(torch.stack([ls[d].bias.detach() for ls in per_net])))

    @property
    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(weight [S, out, in], bias [S, out])`` per layer, input first (``backprop.layer_parameters``)."""
        return [(getattr(self, f"weight{d}"), getattr(self, f"bias{d}")) for d in range(self.depth)]

    @torch.no_grad()
    def copy_member(self, i: int, net: nn.Sequential) -> None:
        """Write network ``i`` of the stack into ``net`` (an ``sql.mlp`` of the same shape)."""
        for (weight, bias), layer in zip(self.layers, backprop.linear_layers(net), strict=False):
            layer.weight.copy_(weight[i])
            layer.bias.copy_(bias[i])


class _StackedMembers(nn.Module):
    """S networks of one kind (each an ``sql.mlp`` ``net`` and an ``obs_scale``), stacked: ``net`` a ``StackedMLP``,
    ``obs_scale`` [S, 1, o]."""

    net: StackedMLP
    obs_scale: torch.Tensor  # a buffer [S, 1, o]

    def __init__(self, members: Sequence[ScaledMLP]):
        super().__init__()
        self.net = StackedMLP([m.net for m in members])
        self.register_buffer("obs_scale", torch.stack([m.obs_scale for m in members]).unsqueeze(-2))

    def copy_member(self, i: int, member: ScaledMLP) -> None:
        """Write stacked network ``i``'s weights into ``member``."""
        self.net.copy_member(i, member.net)


class StackedSoftQNetworks(_StackedMembers):
    """S ``SoftQNetwork``s trained side by side: obs [S, N, o], act [S, G, N, d] -> Q [S, G, N]."""

    @torch.no_grad()
    def traced(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, backprop.Activations]:
        """Q and the activations ``backprop`` needs: obs [S, N, o], act [S, G, N, d] -> [S, G, N]."""
        q, acts = backprop.forward(self.net, obs * self.obs_scale, act)
        return q.squeeze(-1), acts

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """obs [S, N, o], act [S, G, N, d] -> [S, G, N] (no autograd)."""
        return self.traced(obs, act)[0]

    def action_gradient(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``dQ(s, a)/da`` (SQL Eq. 13's score): obs [S, N, o], act [S, G, N, d] -> [S, G, N, d]."""
        _, acts = self.traced(obs, act)
        return backprop.input_gradient(self.net, acts, act.shape[1])


class StackedSamplers(_StackedMembers):
    """S amortized SVGD samplers ``u = xi + g(s, xi)`` (``sql.SamplerNetwork``): obs [S, N, o], noise [S, G, N, d] -> u."""

    @torch.no_grad()
    def traced(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, backprop.Activations]:
        """Pre-tanh particles and saved activations: obs [S, N, o], noise [S, G, N, d] -> u [S, G, N, d]."""
        out, acts = backprop.forward(self.net, obs * self.obs_scale, noise)
        return noise + out, acts

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.traced(obs, noise)[0]


def pad_rows(rows: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """Stack tensors [n_i, ...] into [S, length, ...], zero-filled past each n_i."""
    out = rows[0].new_zeros(len(rows), length, *rows[0].shape[1:])
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def stack_optimizer_state(stacked: torch.optim.Optimizer, members: Sequence[torch.optim.Optimizer]) -> None:
    """Give ``stacked`` (over ``StackedMLP`` parameters) the Adam moments of its S ``members``, if they have any."""
    states = [m.state_dict()["state"] for m in members]
    if not states[0]:
        return
    state_dict = stacked.state_dict()
    state_dict["state"] = {j: {key: (value.clone() if key == "step" else torch.stack([s[j][key] for s in states]))
                               for key, value in states[0][j].items()} for j in states[0]}
    stacked.load_state_dict(state_dict)


def copy_optimizer_member(stacked: torch.optim.Optimizer, i: int, member: torch.optim.Optimizer) -> None:
    """Write member ``i``'s Adam moments (and step count) from ``stacked`` into ``member``."""
    state_dict = member.state_dict()
    state_dict["state"] = {j: {key: value.detach().clone() if key == "step" else value[i].detach().clone()
                               for key, value in state.items()} for j, state in stacked.state_dict()["state"].items()}
    member.load_state_dict(state_dict)


@contextmanager
def global_stream(generator: torch.Generator) -> Iterator[None]:
    """Make ``generator`` (CPU) torch's global random stream for the block, then hand the stream back to it.

    Code that draws from the global stream (evaluation, the value checks) then draws seed i's numbers, as
    it would in a single-seed run of seed i. A non-CPU generator leaves the global stream alone.
    """
    if generator.device.type != "cpu":
        yield
        return
    saved = torch.get_rng_state()
    torch.set_rng_state(generator.get_state())
    try:
        yield
    finally:
        generator.set_state(torch.get_rng_state())
        torch.set_rng_state(saved)


class StackedSoftQLearning:
    """S independent SQL learners (one per seed) whose updates run as one chain of batched ops.

    Built from S ``SoftQLearning`` agents of one configuration (fresh or resumed, with their Adam state) and
    one random stream per seed. Every number seed i draws (SVGD noise, value importance samples, acting
    noise) comes from ``generators[i]``, in the order in which ``SoftQLearning`` draws it from torch's global
    stream, so one stacked update equals S single-seed updates that draw the same numbers, to float
    rounding (``tests/test_seeds.py``). ``copy_to_agents`` writes the weights back into the S agents, which
    the trainer evaluates and saves as ordinary skills.

    ``per_seed_streams=False`` (the default off the CPU) draws every random tensor for all S seeds in one call
    from ``generators[0]``: S times fewer small ops (on a GPU, S times fewer kernel launches per draw), seeds
    still independent of each other, but a seed's numbers then depend on the whole seed list.
    """

    def __init__(self, agents: Sequence[SoftQLearning], generators: Sequence[torch.Generator],
                 per_seed_streams: bool | None = None):
        configs = {a.config for a in agents}
        if len(configs) != 1:
            raise ValueError(f"stacked agents must share one SQLConfig; got {len(configs)} different ones")
        if any(type(a.q) is not SoftQNetwork for a in agents):
            raise ValueError("stacked training takes plain SoftQNetwork agents (not composed or adapted ones)")
        updates = sorted({a.updates for a in agents})
        if len(updates) != 1:
            raise ValueError(f"stacked agents must have taken the same number of updates; got {updates}")
        if len(generators) != len(agents):
            raise ValueError(f"{len(agents)} agents but {len(generators)} random streams")
        self.agents, self.generators = list(agents), list(generators)
        self.config, self.device = agents[0].config, agents[0].device
        self.obs_dim, self.act_dim = agents[0].obs_dim, agents[0].act_dim
        self.q = StackedSoftQNetworks([a.q for a in agents]).to(self.device)
        self.q_target = StackedSoftQNetworks([a.q_target for a in agents]).to(self.device).requires_grad_(False)
        self.sampler = StackedSamplers([a.sampler for a in agents]).to(self.device)
        self.q_optimizer = torch.optim.Adam(self.q.parameters(), lr=self.config.q_lr, fused=True)
        self.sampler_optimizer = torch.optim.Adam(self.sampler.parameters(), lr=self.config.sampler_lr, fused=True)
        stack_optimizer_state(self.q_optimizer, [a.q_optimizer for a in agents])
        stack_optimizer_state(self.sampler_optimizer, [a.sampler_optimizer for a in agents])
        self.updates = updates[0]
        self.target_values = TargetValueCache(self.device)
        ranges = {a.value_range for a in agents}
        if len(ranges) != 1:
            raise ValueError(f"stacked agents must share one value_range; got {sorted(ranges, key=str)}")
        self.value_range = ranges.pop()
        self.member_index = torch.arange(len(agents), device=self.device).unsqueeze(1)  # [S, 1]
        self.per_seed_streams = self.device.type == "cpu" if per_seed_streams is None else per_seed_streams

    @property
    def n(self) -> int:
        return len(self.agents)

    def randn(self, shape: Sequence[int], members: Sequence[int] | None = None) -> torch.Tensor:
        """Standard normal noise [S, *shape]: each member's from its own stream (only ``members``, the rest 0),
        or all of it in one draw from the shared stream."""
        if not self.per_seed_streams:
            return torch.randn(self.n, *shape, generator=self.generators[0], device=self.device)
        if members is None:
            return torch.stack([torch.randn(*shape, generator=g, device=self.device) for g in self.generators])
        out = torch.zeros(self.n, *shape, device=self.device)
        for i in members:
            out[i] = torch.randn(*shape, generator=self.generators[i], device=self.device)
        return out

    # ---- soft values ----
    @torch.no_grad()
    def soft_values(self, q_net: StackedSoftQNetworks, obs: Sequence[torch.Tensor], n_samples: int) -> list[torch.Tensor]:
        """``V(s) = alpha log ∫ exp(Q(s,a)/alpha) da`` (SQL Eq. 10) of each seed's states [n_i, o] under its
        own network, by importance sampling with the configured proposal, as ``SoftQLearning.soft_value``:
        -> [n_i] per seed. Seeds with no states draw nothing (as a single-seed run with nothing to value)."""
        cfg, d = self.config, self.act_dim
        counts = [len(o) for o in obs]
        rows = max(counts)
        if rows == 0:
            return [o.new_zeros(0) for o in obs]
        states = pad_rows(obs, rows)  # [S, P, o]
        shared = self.generators[0]

        def per_seed(draw) -> torch.Tensor:  # draw(i, n_i, generator) -> [n_i, ...]; padded to [S, P, ...]
            return pad_rows([draw(i, counts[i], self.generators[i]) for i in range(self.n)], rows)

        if cfg.value_proposal == "mixture":
            m = cfg.proposal_centers
            noise = per_seed(lambda i, k, g: torch.randn(k, m, d, generator=g, device=self.device)) \
                if self.per_seed_streams else torch.randn(self.n, rows, m, d, generator=shared, device=self.device)
            centers = torch.tanh(self.sampler(states, noise.transpose(1, 2))).transpose(1, 2)  # [S, P, M, d]
            width = kernel_width(centers.flatten(0, 1)).view(self.n, rows, 1, 1)
            share = cfg.proposal_uniform_share
            if self.per_seed_streams:
                actions = per_seed(lambda i, k, g: mixture_proposal(centers[i, :k], n_samples, width[i, :k], share, g))
            else:
                actions = mixture_proposal(centers.flatten(0, 1), n_samples, width.flatten(0, 1), share,
                                           shared).view(self.n, rows, n_samples, d)  # [S, P, n, d]
        elif self.per_seed_streams:
            actions = per_seed(lambda i, k, g: uniform_actions(k, n_samples, d, g, self.device))
        else:
            actions = uniform_actions(self.n * rows, n_samples, d, shared, self.device).view(self.n, rows, n_samples, d)
        q = q_net(states, actions.transpose(1, 2)).transpose(1, 2)  # [S, P, n]
        if cfg.value_proposal == "mixture":
            flat = centers.flatten(0, 1)
            log_q = mixture_log_density(actions.flatten(0, 1), flat, width.flatten(0, 1), cfg.proposal_uniform_share)
            values = soft_value_importance(q.flatten(0, 1), log_q, actions.flatten(0, 1), cfg.alpha).view(self.n, rows)
        else:
            values = soft_value_from_samples(q, cfg.alpha, d)
        return [values[i, : counts[i]] for i in range(self.n)]

    def next_state_values(self, batches: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
        """``V_target(s')`` of every seed's batch [S, B], cached per transition as ``SoftQLearning.next_state_value``."""
        cfg = self.config
        if not (cfg.cache_target_values and all("index" in b for b in batches)):
            return torch.stack(self.soft_values(self.q_target, [b["next_obs"] for b in batches], cfg.value_samples))
        period = self.updates // cfg.target_update_interval
        # one cache for all seeds, keyed by slot * S + seed: each seed's entries are its own, as in S caches
        keys = (torch.stack([b["index"] for b in batches]) * self.n + self.member_index).flatten()  # [S*B]
        ids = torch.stack([b["id"] for b in batches]).flatten()
        miss = self.target_values.misses(period, keys, ids)
        if bool(miss.any()):
            per_seed = miss.view(self.n, -1)
            fresh = self.soft_values(self.q_target, [b["next_obs"][m] for b, m in zip(batches, per_seed, strict=False)],
                                     cfg.value_samples)
            self.target_values.store(keys, ids, miss, torch.cat(fresh))
        return self.target_values.values[keys].view(self.n, -1)

    # ---- losses and their gradients ----
    def q_loss_and_gradients(self, batch: dict[str, torch.Tensor], next_values: torch.Tensor
                             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Soft Bellman residual ``J_Q`` (SQL Eq. 11) of every seed [S] and ``dJ_Q/dθ_Q`` (stacked)."""
        next_values = target_value_in_range(self, next_values)
        q_hat = soft_bellman_target(batch["reward"], batch["terminated"], next_values, self.config.gamma)  # [S, B]
        q, acts = self.q.traced(batch["obs"], batch["action"].unsqueeze(1))
        q = q[:, 0]
        grads = backprop.parameter_gradients(self.q.net, acts, soft_q_loss_gradient(q, q_hat).unsqueeze(-1))
        return soft_q_loss(q, q_hat), grads

    def sampler_loss_and_gradients(self, obs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """SVGD surrogate (SQL Eqs. 13-14) of every seed [S] and the samplers' gradients (stacked)."""
        cfg, n_fixed = self.config, self.config.n_fixed
        s, batch, d = obs.shape[0], obs.shape[1], self.act_dim
        noise = self.randn((batch, cfg.particles, d))  # [S, B, K, d]
        u, acts = self.sampler.traced(obs, noise.transpose(1, 2))  # [S, K, B, d], particle-major
        fixed_u, updated_u = u[:, :n_fixed], u[:, n_fixed:]
        score = squashed_score(fixed_u, self.q.action_gradient(obs, torch.tanh(fixed_u)), cfg.alpha)  # [S, Kf, B, d]
        per_state = [x.transpose(1, 2).flatten(0, 1) for x in (fixed_u, score, updated_u)]  # [S*B, K., d]
        phi = svgd_direction(*per_state).view(s, batch, -1, d)  # [S, B, Ku, d]
        grad_u = sampler_surrogate_gradient(phi).transpose(1, 2).reshape(s, -1, d)  # [S, Ku*B, d]
        grads = backprop.parameter_gradients(self.sampler.net, acts.rows(n_fixed * batch, acts.x.shape[-2]), grad_u)
        return sampler_surrogate_loss(phi, updated_u.transpose(1, 2)), grads

    # ---- one update of every seed ----
    def update(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One gradient step on every seed's Q and sampler, from its own batch; losses [S].

        Raises ``TrainingDiverged`` (naming the seeds) when a loss is not finite; no weight has moved then.
        """
        batch = {k: torch.stack([b[k] for b in batches]) for k in ("obs", "action", "reward", "terminated")}
        q_loss, q_grads = self.q_loss_and_gradients(batch, self.next_state_values(batches))
        sampler_loss, sampler_grads = self.sampler_loss_and_gradients(batch["obs"])
        finite = torch.isfinite(q_loss) & torch.isfinite(sampler_loss)
        if not bool(finite.all()):
            bad = [i for i, ok in enumerate(finite.tolist()) if not ok]
            err = TrainingDiverged(
                f"non-finite loss at update {self.updates} of stacked member(s) {bad} (q_loss={q_loss.tolist()}, "
                f"sampler_loss={sampler_loss.tolist()}); try a larger alpha or a smaller learning rate")
            err.members = bad
            raise err
        apply_gradients(self, q_grads, sampler_grads)
        return {"q_loss": q_loss, "sampler_loss": sampler_loss}

    # ---- acting and handing back ----
    @torch.no_grad()
    def act(self, obs: np.ndarray, members: Sequence[int]) -> np.ndarray:
        """A sampler action for each of ``members`` (indices into the stack), from its own stream:
        obs [S, o] -> actions [S, d] (rows of the other members are meaningless; nothing is drawn for them)."""
        noise = self.randn((1, 1, self.act_dim), members)
        o = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(1)  # [S, 1, o]
        return torch.tanh(self.sampler(o, noise))[:, 0, 0].cpu().numpy()

    @torch.no_grad()
    def copy_to_agents(self) -> None:
        """Write every seed's weights, Adam moments and update count into its ``SoftQLearning`` agent."""
        for i, agent in enumerate(self.agents):
            self.q.copy_member(i, agent.q)
            self.q_target.copy_member(i, agent.q_target)
            self.sampler.copy_member(i, agent.sampler)
            copy_optimizer_member(self.q_optimizer, i, agent.q_optimizer)
            copy_optimizer_member(self.sampler_optimizer, i, agent.sampler_optimizer)
            agent.updates = self.updates


def stacked_memory_bytes(n: int, obs_dim: int, act_dim: int, capacity: int, hidden: Sequence[int], batch: int,
                         particles: int, value_samples: int) -> int:
    """Rough bytes that ``n`` stacked seeds hold: replay buffers (float32 obs, next obs, action, reward and
    done, int64 ids), the Q, target and sampler networks with Adam's two moments, and the largest update's
    activations (float32, a few copies of the widest particle batch)."""
    replay = capacity * (4 * (2 * obs_dim + act_dim + 2) + 8)
    widths = [obs_dim + act_dim, *hidden]
    mlp = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    networks = 4 * 7 * (mlp + hidden[-1] * (1 + act_dim) + 1 + act_dim)
    activations = 4 * 4 * batch * max(particles, value_samples) * sum(hidden)
    return n * (replay + networks + activations)
