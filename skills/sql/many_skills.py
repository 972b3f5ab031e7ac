"""Many soft Q-networks in one batched call, and the composed soft Q-function built on them.

``StackedQ`` evaluates N ``SoftQNetwork``s (N skills) as one chain of batched matmuls. ``ComposedSoftQNetwork``
is ``Q(s, a) = sum_i w_i Q_i(s, a) + R(s, a)``: frozen constituents ``Q_i`` (Haarnoja et al. 2018's
``Q_w``) plus a trainable residual ``R`` whose output starts at exactly 0. With ``R = 0`` it is a
saved composition; trained by SQL on the combined reward it is an adapted one (``compose.adapt``).
It answers what ``SoftQLearning`` asks of a Q-network (``forward``, ``traced``, ``action_gradient``,
``net`` for the parameter gradients), so the SQL update and the skill format need nothing else.

(S seeds of one skill trained side by side are another kind of stacking: ``skills.sql.many_seeds``.)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from . import backprop
from .equations import ScaledMLP, SoftQNetwork
from .seeding import seeded

COMPOSED = "composed"  # the manifest's architecture["q"] of a composed Q-network


class StackedQ(nn.Module):
    """N soft Q-networks as one batched MLP: obs [..., o], act [..., a] -> [N, ...].

    Narrower networks are zero-padded to the widest, which leaves their outputs unchanged
    (padded ReLU units are always 0 and feed nothing). The weights are buffers: frozen.
    """

    obs_scale: torch.Tensor  # a buffer [N, o]

    def __init__(self, q_networks: Sequence[ScaledMLP]):
        super().__init__()
        linears = [[m for m in q.net if isinstance(m, nn.Linear)] for q in q_networks]
        shapes = [(max(ls[depth].in_features for ls in linears), max(ls[depth].out_features for ls in linears))
                  for depth in range(len(linears[0]))]
        self._allocate(len(q_networks), shapes, q_networks[0].obs_scale.shape[0])
        for depth, (w, b) in enumerate(zip(self.weights, self.biases, strict=False)):
            for i, ls in enumerate(linears):
                layer = ls[depth]
                w[i, : layer.in_features, : layer.out_features] = layer.weight.detach().T
                b[i, 0, : layer.out_features] = layer.bias.detach()
        self.obs_scale.copy_(torch.stack([q.obs_scale for q in q_networks]))

    @classmethod
    def empty(cls, n: int, shapes: Sequence[Sequence[int]], obs_dim: int) -> "StackedQ":
        """Zeros of the given layer shapes ``[(in, out), ...]``, to be filled by ``load_state_dict``."""
        stacked = cls.__new__(cls)
        nn.Module.__init__(stacked)
        stacked._allocate(n, [tuple(s) for s in shapes], obs_dim)
        return stacked

    def _allocate(self, n: int, shapes: Sequence[tuple[int, ...]], obs_dim: int) -> None:
        self.depth = len(shapes)
        for depth, (in_dim, out_dim) in enumerate(shapes):
            self.register_buffer(f"weight{depth}", torch.zeros(n, in_dim, out_dim))
            self.register_buffer(f"bias{depth}", torch.zeros(n, 1, out_dim))
        self.register_buffer("obs_scale", torch.ones(n, obs_dim))  # [N, o]

    @property
    def weights(self) -> list[torch.Tensor]:
        return [getattr(self, f"weight{d}") for d in range(self.depth)]

    @property
    def biases(self) -> list[torch.Tensor]:
        return [getattr(self, f"bias{d}") for d in range(self.depth)]

    @property
    def shapes(self) -> list[list[int]]:
        """``[[in, out], ...]`` per layer (padded to the widest network)."""
        return [list(w.shape[1:]) for w in self.weights]

    @property
    def n(self) -> int:
        return self.obs_scale.shape[0]

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(obs.shape[:-1], act.shape[:-1])
        obs = obs.expand(*shape, obs.shape[-1]).reshape(1, -1, obs.shape[-1]) * self.obs_scale[:, None, :]
        act = act.expand(*shape, act.shape[-1]).reshape(1, -1, act.shape[-1]).expand(self.n, -1, -1)
        x = torch.cat([obs, act], dim=-1)  # [N, rows, o + a]
        for depth, (w, b) in enumerate(zip(self.weights, self.biases, strict=False)):
            x = torch.baddbmm(b, x, w)
            if depth < self.depth - 1:
                x = torch.relu(x)
        return x[..., 0].reshape(self.n, *shape)


def zero_residual(obs_dim: int, act_dim: int, hidden: tuple[int, ...], obs_scale: torch.Tensor) -> SoftQNetwork:
    """A ``SoftQNetwork`` whose output layer is zero, so ``R(s, a) = 0`` exactly until it is trained.

    Its hidden layers keep their random initialisation: the first gradient step moves the output
    layer, and from then on gradients reach the rest (as in zero-initialised residual branches).
    """
    residual = SoftQNetwork(obs_dim, act_dim, hidden, obs_scale)
    output = backprop.linear_layers(residual.net)[-1]  # the output layer
    with torch.no_grad():
        output.weight.zero_()
        output.bias.zero_()
    return residual


class ComposedSoftQNetwork(nn.Module):
    """``Q(s, a) = sum_i w_i Q_i(s, a) + R(s, a)``: obs [..., o], act [..., d] -> [...].

    ``stacked`` holds the frozen ``Q_i``, ``mix`` the weights ``w`` [N], ``residual`` the trainable ``R``.
    Its parameters are ``R``'s alone, so an optimizer over ``parameters()`` trains only ``R``.
    """

    stacked: StackedQ
    residual: SoftQNetwork
    mix: torch.Tensor  # a buffer [N]

    def __init__(self, stacked: StackedQ, weights: torch.Tensor, residual: SoftQNetwork):
        super().__init__()
        self.stacked, self.residual = stacked, residual
        self.register_buffer("mix", torch.as_tensor(weights, dtype=torch.float32).clone())

    @property
    def net(self) -> nn.Sequential:
        """The residual's MLP: the layers that ``backprop.parameter_gradients`` differentiates."""
        return self.residual.net

    @property
    def obs_scale(self) -> torch.Tensor:
        return self.residual.obs_scale

    def base(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``Q_w(s, a) = sum_i w_i Q_i(s, a)`` (Haarnoja et al. 2018, Eq. 2): [...]."""
        return torch.tensordot(self.mix, self.stacked(obs, act), dims=1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``Q_w(s, a) + R(s, a)``: obs [..., o] broadcast against act [..., d] -> [...]."""
        return self.base(obs, act) + self.residual(obs, act)

    @torch.no_grad()
    def traced(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, backprop.Activations]:
        """``forward`` with ``R``'s activations saved for ``backprop``: obs [N, o], act [G, N, d] -> [G, N]."""
        r, acts = self.residual.traced(obs, act)
        return self.base(obs, act) + r, acts

    def action_gradient(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``dQ/da = dQ_w/da + dR/da``: obs [N, o], act [G, N, d] -> [G, N, d] (``Q_w``'s part by autograd)."""
        with torch.enable_grad():
            a = act.detach().requires_grad_(True)
            (base_grad,) = torch.autograd.grad(self.base(obs, a).sum(), a)
        return base_grad + self.residual.action_gradient(obs, act)

    def architecture(self) -> dict:
        """The manifest record that ``from_architecture`` rebuilds this network from."""
        return {"q": COMPOSED, "formula": "Q(s,a) = sum_i w_i Q_i(s,a) + R(s,a); Q_i frozen, R trained",
                "weights": self.mix.tolist(), "constituents": self.stacked.n, "constituent_layers": self.stacked.shapes,
                "residual_hidden": [layer.out_features for layer in backprop.linear_layers(self.residual.net)[:-1]]}

    @classmethod
    def from_architecture(cls, record: dict, obs_dim: int, act_dim: int) -> "ComposedSoftQNetwork":
        """An unfilled network of the shapes a manifest records (``load_state_dict`` fills it)."""
        stacked = StackedQ.empty(int(record["constituents"]), record["constituent_layers"], obs_dim)
        residual = SoftQNetwork(obs_dim, act_dim, tuple(int(h) for h in record["residual_hidden"]))
        return cls(stacked, torch.tensor([float(w) for w in record["weights"]]), residual)

    @classmethod
    def compose(cls, q_networks: Sequence[ScaledMLP], weights: Sequence[float], hidden: tuple[int, ...],
                seed: int = 0, residual: SoftQNetwork | None = None) -> "ComposedSoftQNetwork":
        """``sum_i w_i Q_i`` of trained networks, plus ``residual`` (a copy), or by default a fresh residual (hidden
        layers seeded by ``seed``) at 0."""
        first = q_networks[0]
        obs_dim = first.obs_scale.shape[0]
        act_dim = backprop.linear_layers(first.net)[0].in_features - obs_dim  # the first layer's
        if residual is None:
            with seeded(seed):
                residual = zero_residual(obs_dim, act_dim, hidden, first.obs_scale)
        else:
            residual = copy.deepcopy(residual)
        return cls(StackedQ(q_networks), torch.as_tensor(weights, dtype=torch.float32), residual)


def q_network(architecture: dict, obs_dim: int, act_dim: int, hidden: tuple[int, ...],
              obs_scale: torch.Tensor) -> SoftQNetwork | ComposedSoftQNetwork:
    """The Q-network a manifest's ``architecture`` describes: an MLP, or a composed one."""
    if architecture.get("q", "mlp") == COMPOSED:
        return ComposedSoftQNetwork.from_architecture(architecture, obs_dim, act_dim)
    return SoftQNetwork(obs_dim, act_dim, hidden, obs_scale)
