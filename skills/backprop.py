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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Activations:
    """What a forward pass saves for its backward pass."""

    state: torch.Tensor  # [N, d_s] (already scaled) states
    x: torch.Tensor  # [G*N, d_x] per-row inputs (actions or noise), group-major
    hidden: tuple[torch.Tensor, ...]  # post-ReLU activations h_l [G*N, H_l], first layer first

    def rows(self, start: int, stop: int) -> "Activations":
        """The saved activations of rows ``start:stop`` (whole groups, so the state layout holds)."""
        return Activations(self.state, self.x[start:stop], tuple(h[start:stop] for h in self.hidden))


def linear_layers(net: nn.Sequential) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of an ``sql.mlp`` network, input first."""
    return [layer for layer in net if isinstance(layer, nn.Linear)]


def relu_backward(grad_h: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``dL/dz = dL/dh * [h > 0]`` for ``h = relu(z)``: [..., H] -> [..., H].

    aten's ``threshold_backward`` is the fused kernel autograd itself uses; a boolean mask and a
    multiply is about 7x slower on CPU.
    """
    return torch.ops.aten.threshold_backward(grad_h, h, 0.0)


@torch.no_grad()
def forward(net: nn.Sequential, state: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, Activations]:
    """``net([s, x])`` for every row: state [N, d_s], x [G, N, d_x] -> out [G, N, d_out], activations."""
    first, *hidden_layers, last = linear_layers(net)
    groups, n, d_x = x.shape
    d_s = state.shape[-1]
    x_rows = x.reshape(groups * n, d_x)
    z = torch.mm(x_rows, first.weight[:, d_s:].t()).view(groups, n, -1)
    z += torch.addmm(first.bias, state, first.weight[:, :d_s].t())  # W_s s + b, once per state
    h = z.view(groups * n, -1).relu_()
    hidden = [h]
    for layer in hidden_layers:
        h = torch.addmm(layer.bias, h, layer.weight.t()).relu_()
        hidden.append(h)
    out = torch.addmm(last.bias, h, last.weight.t())
    return out.view(groups, n, -1), Activations(state, x_rows, tuple(hidden))


def _pre_activation_gradients(layers: list[nn.Linear], acts: Activations, grad_h_last: torch.Tensor) -> list[torch.Tensor]:
    """``dL/dz_l`` of every hidden layer [G*N, H_l], first layer first, from ``dL/dh`` of the last."""
    grads = [relu_backward(grad_h_last, acts.hidden[-1])]
    for layer, h in zip(reversed(layers[1:-1]), reversed(acts.hidden[:-1])):
        grads.append(relu_backward(torch.mm(grads[-1], layer.weight), h))
    return grads[::-1]


@torch.no_grad()
def input_gradient(net: nn.Sequential, acts: Activations, n_groups: int) -> torch.Tensor:
    """``d out / dx`` of a scalar-output network (e.g. ``dQ(s, a)/da``): -> [G, N, d_x].

    ``dL/dh`` of the last hidden layer is the output layer's weight row for every sample, used
    broadcast rather than materialised.
    """
    layers = linear_layers(net)
    first, last = layers[0], layers[-1]
    n_rows = acts.x.shape[0]
    grad_h_last = last.weight.expand(n_rows, -1)  # [G*N, H] (a view of [1, H])
    grad_z1 = _pre_activation_gradients(layers, acts, grad_h_last)[0]
    d_s = acts.state.shape[-1]
    return torch.mm(grad_z1, first.weight[:, d_s:]).view(n_groups, n_rows // n_groups, -1)


@torch.no_grad()
def parameter_gradients(net: nn.Sequential, acts: Activations, grad_out: torch.Tensor) -> list[torch.Tensor]:
    """``dL/dθ`` from ``dL/d out`` [G*N, d_out], in ``net.parameters()`` order (W_1, b_1, W_2, ...)."""
    layers = linear_layers(net)
    grad_h_last = torch.mm(grad_out, layers[-1].weight)
    grad_z = _pre_activation_gradients(layers, acts, grad_h_last) + [grad_out]
    n_states = acts.state.shape[0]
    grad_z1_per_state = grad_z[0].view(-1, n_states, grad_z[0].shape[-1]).sum(0)  # [N, H_1]
    weight_1 = torch.cat([grad_z1_per_state.t().mm(acts.state), grad_z[0].t().mm(acts.x)], dim=1)
    grads = [weight_1, grad_z1_per_state.sum(0)]
    for g, h_in in zip(grad_z[1:], acts.hidden):
        grads += [g.t().mm(h_in), g.sum(0)]
    return grads
