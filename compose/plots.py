"""Figures of a composition report (matplotlib PNGs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from skills.evaluation.plots import _pyplot, save_figure


def plot_q_slices(panels: dict[str, np.ndarray], extent: float, path: str | Path, title: str,
                  samples: np.ndarray | None = None, axis_names: tuple[str, str] = ("a_x", "a_y"),
                  samples_panel: str | None = None) -> None:
    """Heatmaps of several Q-functions over a 2-D slice of the action space at one state.

    ``panels``: name -> Q on an [n, n] grid over ``[-extent, extent]^2`` (rows: second axis).
    Each panel is shown relative to its own maximum, with the argmax marked; ``samples`` are drawn on the panel
    ``samples_panel`` (default: the first whose name starts with ``Q_w``).
    """
    if samples_panel is None:
        samples_panel = next((name for name in panels if name.startswith("Q_w")), None)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), dpi=110)
    for ax, (name, grid) in zip(np.atleast_1d(axes), panels.items(), strict=False):
        rel = grid - grid.max()
        image = ax.imshow(rel, origin="lower", extent=(-extent, extent, -extent, extent), cmap="viridis",
                          vmin=max(rel.min(), np.percentile(rel, 2)), vmax=0)
        iy, ix = np.unravel_index(np.argmax(grid), grid.shape)
        coords = np.linspace(-extent, extent, grid.shape[0])
        ax.plot(coords[ix], coords[iy], "r*", ms=12)
        if samples is not None and name == samples_panel:
            ax.plot(samples[:, 0], samples[:, 1], "w.", ms=3, alpha=0.7)
        ax.set_title(name)
        ax.set_xlabel(axis_names[0])
        ax.set_ylabel(axis_names[1])
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def q_grid(q_fn, obs: np.ndarray, act_dim: int, n: int = 61, fixed: float = 0.0) -> np.ndarray:
    """Q over the first two action dimensions at one state (others fixed): [n, n]."""
    coords = np.linspace(-1, 1, n, dtype=np.float32)
    ax, ay = np.meshgrid(coords, coords)
    acts = np.full((n * n, act_dim), fixed, np.float32)
    acts[:, 0], acts[:, 1] = ax.ravel(), ay.ravel()
    with torch.no_grad():
        q = q_fn(torch.as_tensor(obs, dtype=torch.float32)[None], torch.as_tensor(acts))
    return np.asarray(q).reshape(n, n)


def plot_episode_bound(q_w: np.ndarray, c: np.ndarray, q_joint: np.ndarray | None, path: str | Path,
                       title: str, mc_rows: list[dict] | None = None) -> None:
    """``Q_w``, ``Q_w - C`` and ``Q_joint`` along one episode of the composed policy; with ``mc_rows``
    (``compose.mc_check.soft_q_rows``), Monte Carlo soft returns of each policy from (s_t, a_t) with 95% CIs."""
    plt = _pyplot()
    steps = np.arange(len(q_w))
    fig, ax = plt.subplots(figsize=(6.5, 4.6), dpi=110)
    ax.fill_between(steps, q_w - c, q_w, color="tab:blue", alpha=0.15, label="bound [Q_w - C, Q_w]")
    ax.plot(steps, q_w, color="tab:blue", label="Q_w (composed)")
    ax.plot(steps, q_w - c, "--", color="tab:blue", label="Q_w - C")
    if q_joint is not None:
        ax.plot(steps, q_joint, color="tab:red", alpha=0.5, label="Q_joint (learned)")
    for name, colour, shift in (("composed", "tab:blue", -0.3), ("joint", "tab:red", 0.3)):
        rows = [r for r in (mc_rows or []) if name in r]
        if rows:
            x = np.array([r["step"] for r in rows]) + shift
            mean = np.array([r[name]["mean"] for r in rows])
            err = np.array([[m - r[name]["ci"][0], r[name]["ci"][1] - m] for m, r in zip(mean, rows, strict=False)]).T
            ax.errorbar(x, mean, yerr=err, fmt="o", ms=3.5, color=colour, capsize=2,
                        label=f"MC soft return of the {name} policy, 95% CI")
    ax.set_xlabel("step")
    ax.set_ylabel("soft Q at (s_t, a_t)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    save_figure(fig, path)


def plot_comparison(rows: dict[str, dict], path: str | Path, title: str) -> None:
    """Success rate and mean return of each policy, side by side."""
    plt = _pyplot()
    names = list(rows)
    colours = ["tab:blue" if n == "composed" else "tab:red" if n == "joint" else "0.6" for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.4), dpi=110)
    left.bar(names, [rows[n]["success_rate"] for n in names], color=colours)
    left.set_ylim(0, 1.05)
    left.set_ylabel("success rate")
    right.bar(names, [rows[n]["return_mean"] for n in names], color=colours,
              yerr=[rows[n].get("return_std", 0) for n in names], capsize=3)
    right.set_ylabel("mean return (combined reward)")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=20)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def plot_trajectories(paths: dict[str, list[np.ndarray]], marks: list[np.ndarray], path: str | Path, title: str,
                      label: str, outcomes: dict[str, list[bool]] | None = None) -> None:
    """One top-view panel per policy: its episodes' paths [T, 2] (green: success, red: not), the start (dot) and
    each episode's marks [K, 2] (goals, target, obstacle) as rings."""
    plt = _pyplot()
    cols = min(4, len(paths))
    rows = -(-len(paths) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.0 * rows + 0.5), dpi=110, squeeze=False)
    for ax in axes.flat[len(paths):]:
        ax.set_visible(False)
    every = np.concatenate([p for ps in paths.values() for p in ps] + [m for m in marks])
    lo, hi = every.min(0), every.max(0)
    pad = 0.08 * float(np.max(hi - lo) + 1e-9)
    for ax, (name, episodes) in zip(axes.flat, paths.items(), strict=False):
        for mark in marks[: len(episodes)]:
            ax.plot(mark[:, 0], mark[:, 1], "o", mfc="none", mec="0.55", ms=7, alpha=0.6)
        for k, p in enumerate(episodes):
            ok = outcomes[name][k] if outcomes is not None else True
            ax.plot(p[:, 0], p[:, 1], "-", lw=0.9, alpha=0.7, color="tab:green" if ok else "tab:red")
            ax.plot(p[0, 0], p[0, 1], ".", color="k", ms=3)
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(lo[1] - pad, hi[1] + pad)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{title}\n{label}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
