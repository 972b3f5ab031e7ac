"""The hand-written forward and backward passes of the SQL networks agree with autograd."""

import numpy as np
import pytest
import torch

from skills.sql import (
    SamplerNetwork,
    SoftQNetwork,
    backprop,
    q_action_gradient,
    sampler_svgd_loss,
    soft_bellman_target,
    soft_q_loss,
)
from skills.sql.learner import SoftQLearning, SQLConfig
from skills.training.buffer import ReplayBuffer

OBS, ACT, HIDDEN = 5, 3, (16, 12, 8)  # three hidden layers of different widths exercise every loop


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


@pytest.fixture
def nets(device):
    torch.manual_seed(0)
    scale = torch.linspace(0.5, 2.0, OBS)
    return SoftQNetwork(OBS, ACT, HIDDEN, scale).to(device), SamplerNetwork(OBS, ACT, HIDDEN, scale).to(device)


def test_traced_forward_matches_the_module_forward(nets, device):
    q, sampler = nets
    obs, x = torch.randn(7, OBS, device=device), torch.randn(4, 7, ACT, device=device)  # 4 rows per state, group-major
    q_traced, _ = q.traced(obs, x)
    close(q_traced, q(obs.unsqueeze(0), x))
    u_traced, _ = sampler.traced(obs, x)
    close(u_traced, sampler(obs, x.transpose(0, 1)).transpose(0, 1))


def test_parameter_gradients_match_autograd(nets, device):
    _, sampler = nets
    obs, noise, grad_u = (torch.randn(*shape, device=device) for shape in ((7, OBS), (4, 7, ACT), (4 * 7, ACT)))
    _, acts = sampler.traced(obs, noise)
    ours = backprop.parameter_gradients(sampler.net, acts.rows(2 * 7, 4 * 7), grad_u[2 * 7:])  # groups 2, 3 only
    u = sampler(obs, noise[2:].transpose(0, 1)).transpose(0, 1).reshape(-1, ACT)
    reference = torch.autograd.grad((u * grad_u[2 * 7:]).sum(), list(sampler.parameters()))
    assert len(ours) == len(reference)
    for a, r in zip(ours, reference, strict=False):
        close(a, r)


def test_input_gradient_matches_autograd(nets, device):
    q, _ = nets
    obs, actions = torch.randn(7, OBS, device=device), torch.rand(4, 7, ACT, device=device) * 2 - 1
    _, acts = q.traced(obs, actions)
    ours = backprop.input_gradient(q.net, acts, n_groups=4)
    reference = q_action_gradient(q, obs, actions.transpose(0, 1)).transpose(0, 1)
    close(ours, reference)


def test_the_samplers_jacobian_matches_autograd(nets, device):
    """``sampler_jacobian`` by the hand-written backward passes (one per output) against autograd through the module
    (any sampler that is not a ``SamplerNetwork`` takes that path), and ``input_jacobian`` row by row."""
    from skills.sql.equations import sampler_jacobian

    _, sampler = nets
    obs, noise = torch.randn(7, OBS, device=device), torch.randn(7, 5, ACT, device=device)

    class Opaque(torch.nn.Module):  # the same function, hidden from the fast path
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, o, x):
            return self.inner(o, x)

    u, jacobian = sampler_jacobian(sampler, obs, noise)
    u_ref, jacobian_ref = sampler_jacobian(Opaque(sampler), obs, noise)
    assert jacobian.shape == (7, 5, ACT, ACT)
    close(u, u_ref)
    close(jacobian, jacobian_ref)
    assert not torch.allclose(jacobian, torch.eye(ACT, device=device).expand_as(jacobian))  # g depends on xi


def test_agent_gradients_match_autograd_of_the_textbook_losses(device):
    """SQL Eq. 11 and Eqs. 13-14 written with autograd (skills.sql) against the agent's update."""
    config = SQLConfig(hidden=(32, 32), batch_size=16, particles=6, value_samples=4, alpha=0.3)
    torch.manual_seed(1)
    agent = SoftQLearning(OBS, ACT, config, device=device)
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(OBS, ACT, 64)
    for _ in range(64):
        buffer.add(rng.normal(size=OBS), rng.uniform(-1, 1, ACT), rng.normal(), rng.normal(size=OBS), False)
    batch = buffer.sample(16, rng, device)

    q_loss, q_grads = agent.q_loss_and_gradients(batch)
    q_hat = soft_bellman_target(batch["reward"], batch["terminated"], agent.next_state_value(batch), config.gamma)
    reference = soft_q_loss(agent.q(batch["obs"], batch["action"]), q_hat)
    close(q_loss, reference.detach())
    for a, r in zip(q_grads, torch.autograd.grad(reference, list(agent.q.parameters())), strict=False):
        close(a, r)

    torch.manual_seed(2)
    sampler_loss, sampler_grads = agent.sampler_loss_and_gradients(batch["obs"])
    torch.manual_seed(2)  # the same particle noise, drawn as the agent draws it
    noise = torch.randn(16, config.particles, ACT, device=device)
    reference = sampler_svgd_loss(agent.sampler, agent.q, batch["obs"], noise, config.n_fixed, config.alpha)
    close(sampler_loss, reference.detach())
    for a, r in zip(sampler_grads, torch.autograd.grad(reference, list(agent.sampler.parameters())), strict=False):
        close(a, r)
