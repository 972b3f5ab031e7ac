"""Averaging (Haarnoja et al. 2018): ``Q_w = sum_i w_i Q_i``, the operator the composition bound is about."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import ComposedParts, Energy, Operator


@dataclass(frozen=True)
class Average(Operator):
    """``Q_w = sum_i w_i Q_i``. Exact for ``r_w`` when the constituents' policies agree; otherwise within the bound
    ``Q_w - C* <= Q*_w <= Q_w`` (``compose.bound``)."""

    name = "average"
    summary = "Q_w = sum_i w_i Q_i (Haarnoja et al. 2018)"
    bounded = True
    saves_as_residual = True
    residual_form = "R = 0"

    def cache_settings(self, sampler: dict, bound: dict) -> dict:
        """The sampler's and the bound's settings: the key averaged compositions had before operators existed, so
        their cached builds (the shipped ones among them) are still found."""
        return {"sampler": sampler, "bound": bound}

    def energy(self, composition: ComposedParts, modules: dict[str, nn.Module]) -> Energy:
        return composition.q_w

    def residual(self, energy: Energy) -> nn.Module | None:
        """``Q_w`` itself: ``R = 0``."""
        return None
