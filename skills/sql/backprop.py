"""Hand-written forward and backward passes of the SQL networks (ReLU MLPs built by ``sql.mlp``).

One SQL update needs three gradients of these MLPs:

* ``dJ_Q/dθ`` of the soft Bellman residual (SQL Eq. 11), on the batch;
* ``dQ/da`` at the fixed SVGD particles (the score in SQL Eq. 13), no parameter gradients;
* the sampler's parameter gradient along the SVGD direction (SQL Eq. 14), on the updated particles.

Autograd gives the same numbers with the same matmuls, but on one CPU thread its graph
bookkeeping, its expanded output gradients and its fresh buffers cost more than the matmuls
(bench/README.md). Here the ReLUs run in place, the backward pass reuses the saved activations,
and nothing is recorded. ``tests/test_backprop.py`` checks every function against autograd.

Layout: ``x`` [G, N, d_x] holds G rows (particles, or one action) for each of N states, state
[N, d_s]. The first layer is split, ``z_1 = W_s s + W_x x + b_1``, so a state's projection is
computed once for its G rows. Rows are group-major, so the rows of a particle group are contiguous.

Stacked networks: every function also takes S independent networks of one shape at once
(``skills.sql.many_seeds.StackedMLP``: weights [S, out, in], biases [S, out]), with a leading S on every
tensor (state [S, N, d_s], x [S, G, N, d_x]). The matmuls become batched matmuls over S and the
arithmetic is otherwise the same, so S seeds cost one chain of ops instead of S.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class Activations:
    """What a forward pass saves for its backward pass."""

    state: torch.Tensor  # [(S,) N, d_s] (already scaled) states
    x: torch.Tensor  # [(S,) G*N, d_x] per-row inputs (actions or noise), group-major
    hidden: tuple[torch.Tensor, ...]  # post-ReLU activations h_l [(S,) G*N, H_l], first layer first

    def rows(self, start: int, stop: int) -> "Activations":
        """The saved activations of rows ``start:stop`` (whole groups, so the state layout holds)."""
        return Activations(self.state, self.x[..., start:stop, :], tuple(h[..., start:stop, :] for h in self.hidden))


class StackedLayers(Protocol):
    """S networks of one shape as stacked parameters (``skills.sql.many_seeds.StackedMLP``)."""

    @property
    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]: ...  # (weight [S, out, in], bias [S, out]) per layer


def linear_layers(net: nn.Sequential) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of an ``sql.mlp`` network, input first."""
    return [layer for layer in net if isinstance(layer, nn.Linear)]


def layer_parameters(net: nn.Sequential | StackedLayers) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight [(S,) out, in], bias [(S,) out])`` of every layer, input first: an ``sql.mlp``'s
    ``nn.Linear`` layers, or a stacked network's ``layers``."""
    if isinstance(net, nn.Sequential):
        return [(layer.weight, layer.bias) for layer in linear_layers(net)]
    return net.layers


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a b``: ``torch.mm`` of matrices, ``torch.bmm`` of stacks [S, ., .]."""
    return torch.mm(a, b) if a.dim() == 2 else torch.bmm(a, b)


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x W^T + b`` in one fused op: x [(S,) R, in], weight [(S,) out, in], bias [(S,) out] -> [(S,) R, out]."""
    if weight.dim() == 2:
        return torch.addmm(bias, x, weight.t())
    return torch.baddbmm(bias.unsqueeze(-2), x, weight.mT)


def relu_backward(grad_h: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``dL/dz = dL/dh * [h > 0]`` for ``h = relu(z)``: [..., H] -> [..., H].

    aten's ``threshold_backward`` is the fused kernel autograd itself uses; a boolean mask and a
    multiply is about 7x slower on CPU.
    """
    return torch.ops.aten.threshold_backward(grad_h, h, 0.0)


@torch.no_grad()
def forward(net: nn.Sequential | StackedLayers, state: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, Activations]:
    """``net([s, x])`` for every row: state [(S,) N, d_s], x [(S,) G, N, d_x] -> out [(S,) G, N, d_out], activations."""
    (w_1, b_1), *hidden_layers, (w_out, b_out) = layer_parameters(net)
    *lead, groups, n, d_x = x.shape
    d_s = state.shape[-1]
    x_rows = x.reshape(*lead, groups * n, d_x)
    z = matmul(x_rows, w_1[..., d_s:].mT).view(*lead, groups, n, -1)
    z += affine(state, w_1[..., :d_s], b_1).unsqueeze(-3)  # W_s s + b, once per state
    h = z.view(*lead, groups * n, -1).relu_()
    hidden = [h]
    for weight, bias in hidden_layers:
        h = affine(h, weight, bias).relu_()
        hidden.append(h)
    out = affine(h, w_out, b_out)
    return out.view(*lead, groups, n, -1), Activations(state, x_rows, tuple(hidden))


def _pre_activation_gradients(weights: list[torch.Tensor], acts: Activations, grad_h_last: torch.Tensor) -> list[torch.Tensor]:
    """``dL/dz_l`` of every hidden layer [(S,) G*N, H_l], first layer first, from ``dL/dh`` of the last."""
    grads = [relu_backward(grad_h_last, acts.hidden[-1])]
    for weight, h in zip(reversed(weights[1:-1]), reversed(acts.hidden[:-1]), strict=False):
        grads.append(relu_backward(matmul(grads[-1], weight), h))
    return grads[::-1]


@torch.no_grad()
def input_gradient(net: nn.Sequential | StackedLayers, acts: Activations, n_groups: int) -> torch.Tensor:
    """``d out / dx`` of a scalar-output network (e.g. ``dQ(s, a)/da``): -> [(S,) G, N, d_x].

    ``dL/dh`` of the last hidden layer is the output layer's weight row for every sample, used
    broadcast rather than materialised.
    """
    weights = [w for w, _ in layer_parameters(net)]
    *lead, n_rows, _ = acts.x.shape
    grad_h_last = weights[-1].expand(*lead, n_rows, -1)  # [(S,) G*N, H] (a view of [(S,) 1, H])
    grad_z1 = _pre_activation_gradients(weights, acts, grad_h_last)[0]
    d_s = acts.state.shape[-1]
    return matmul(grad_z1, weights[0][..., d_s:]).view(*lead, n_groups, n_rows // n_groups, -1)


@torch.no_grad()
def input_jacobian(net: nn.Sequential | StackedLayers, acts: Activations) -> torch.Tensor:
    """``d out / dx`` of every row, one backward pass per output: -> [(S,) G*N, d_out, d_x] (rows group-major, as
    ``acts.x``). Output ``i``'s pass starts from the output layer's weight row ``i``, as ``input_gradient``'s one."""
    weights = [w for w, _ in layer_parameters(net)]
    *lead, n_rows, _ = acts.x.shape
    d_s = acts.state.shape[-1]
    rows = []
    for i in range(weights[-1].shape[-2]):
        grad_h_last = weights[-1][..., i:i + 1, :].expand(*lead, n_rows, -1)  # [(S,) G*N, H] (a view)
        grad_z1 = _pre_activation_gradients(weights, acts, grad_h_last)[0]
        rows.append(matmul(grad_z1, weights[0][..., d_s:]))
    return torch.stack(rows, dim=-2)


@torch.no_grad()
def parameter_gradients(net: nn.Sequential | StackedLayers, acts: Activations, grad_out: torch.Tensor) -> list[torch.Tensor]:
    """``dL/dθ`` from ``dL/d out`` [(S,) G*N, d_out], in ``net.parameters()`` order (W_1, b_1, W_2, ...)."""
    weights = [w for w, _ in layer_parameters(net)]
    grad_h_last = matmul(grad_out, weights[-1])
    grad_z = _pre_activation_gradients(weights, acts, grad_h_last) + [grad_out]
    *lead, n_states, _ = acts.state.shape
    grad_z1_per_state = grad_z[0].view(*lead, -1, n_states, grad_z[0].shape[-1]).sum(-3)  # [(S,) N, H_1]
    weight_1 = torch.cat([matmul(grad_z1_per_state.mT, acts.state), matmul(grad_z[0].mT, acts.x)], dim=-1)
    grads = [weight_1, grad_z1_per_state.sum(-2)]
    for g, h_in in zip(grad_z[1:], acts.hidden, strict=False):
        grads += [matmul(g.mT, h_in), g.sum(-2)]
    return grads
