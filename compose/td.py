"""Fitting a network offline by TD on stored transitions, with a hard-copied target network.

Shared by the bound's correction ``C`` (``compose.bound``) and the operators' learned parts
(``compose.operators``: divergence correction, constituents evaluated on ``r_w``). No environment samples.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from skills.training.progress import progress_bar


class TDSettings(Protocol):
    """What ``td_fit`` reads of its settings (frozen dataclasses answer it: the members are read-only)."""

    @property
    def lr(self) -> float: ...  # Adam learning rate

    @property
    def batch_size(self) -> int: ...  # transitions per update

    @property
    def target_update_interval(self) -> int: ...  # updates per hard target copy (one backup)


def td_fit(net: nn.Module, td_pair: Callable[[torch.Tensor, nn.Module, nn.Module], tuple[torch.Tensor, torch.Tensor]],
           n_data: int, *, updates: int, config: TDSettings, generator: torch.Generator, progress: bool = False,
           desc: str = "TD fit") -> dict:
    """Fit ``net`` by TD with a hard-copied target network: each update draws ``batch_size`` transition indices
    and calls ``td_pair(idx, net, target) -> (prediction [B], target [B])``. Returns the fit's record."""
    target = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    losses = []
    bar = progress_bar(updates, progress, desc=desc, unit="update")
    for step in range(1, updates + 1):
        bar.update(1)
        idx = torch.randint(n_data, (config.batch_size,), generator=generator)
        prediction, y = td_pair(idx, net, target)
        loss = 0.5 * (prediction - y.detach()).pow(2).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: non-finite TD loss at update {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % config.target_update_interval == 0:
            target.load_state_dict(net.state_dict())
        if step % 100 == 0:
            losses.append(float(loss.detach()))
    bar.close()
    return {"updates": updates, "backups": updates // config.target_update_interval,
            "td_loss_last": losses[-1] if losses else None}
