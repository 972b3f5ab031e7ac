"""Figures: learning curves and multi-goal trajectories (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from envs.files import atomic_path


def save_figure(fig, path: str | Path, **savefig: Any) -> Path:
    """Write ``fig`` to ``path`` atomically (``envs.files.atomic_path``; the format from the suffix, PNG without one)
    and close it."""
    savefig.setdefault("format", Path(path).suffix[1:] or "png")
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, **savefig)
    finally:
        _pyplot().close(fig)
    return Path(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(history: list[dict], path: str | Path, title: str) -> None:
    """Evaluation return and success rate against environment steps."""
    plt = _pyplot()
    steps = [h["env_steps"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(steps, [h["return_mean"] for h in history], "o-", color="tab:blue")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean evaluation return", color="tab:blue")
    twin = ax.twinx()
    twin.plot(steps, [h["success_rate"] for h in history], "s--", color="tab:green")
    twin.set_ylim(-0.02, 1.02)
    twin.set_ylabel("success rate", color="tab:green")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def multigoal_rollouts(policy, episodes: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Paths [T, 2] of ``policy`` on ``multigoal`` and the goal index reached (-1: none)."""
    import envs

    env = envs.make("multigoal")
    paths, goals = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        path, goal = [obs], -1
        while True:
            obs, _, terminated, truncated, info = env.step(policy(obs))
            path.append(obs)
            if terminated or truncated:
                goal = info.get("goal", -1)
                break
        paths.append(np.array(path))
        goals.append(goal)
    env.close()
    return paths, np.array(goals)


def plot_multigoal(paths: list[np.ndarray], goals: np.ndarray, path: str | Path, title: str,
                   q_contours: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
    """Trajectories over the four goals, coloured by the goal each one reached."""
    from envs.multigoal import BOUND, GOAL_RADIUS, GOALS

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    if q_contours is not None:
        ax.contourf(*q_contours, levels=20, cmap="Greys", alpha=0.35)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "0.5"]
    for p, g in zip(paths, goals, strict=False):
        ax.plot(p[:, 0], p[:, 1], "-", lw=0.8, alpha=0.7, color=colours[g])
    for i, goal in enumerate(GOALS):
        ax.add_patch(plt.Circle(goal, GOAL_RADIUS, color=colours[i], alpha=0.3))
        ax.annotate(f"{np.sum(goals == i)}", goal, ha="center", va="center", fontsize=11, weight="bold")
    ax.set_xlim(-BOUND, BOUND)
    ax.set_ylim(-BOUND, BOUND)
    ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_convergence(report: dict, path: str | Path, title: str) -> None:
    """V(s0) against the Monte Carlo soft return of the policy from each start state (95% CIs), with
    the Bellman residuals: points on the diagonal mean a soft Q-function at its fixed point."""
    plt = _pyplot()
    v0 = np.array(report["V0_per_start"])
    g = np.array(report["soft_return_per_start"])
    se = np.array(report["soft_return_se_per_start"])
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=110)
    lo, hi = float(min(v0.min(), (g - 2 * se).min())), float(max(v0.max(), (g + 2 * se).max()))
    pad = 0.05 * (hi - lo + 1e-9)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1, label="fixed point: MC = V(s0)")
    ax.errorbar(v0, g, yerr=1.96 * se, fmt="o", ms=4, capsize=2, color="tab:blue",
                label=f"start states ({report['rollouts_per_start']} rollouts, T = {report['rollout_steps']})")
    ax.set_xlabel("learned V(s0)")
    ax.set_ylabel("Monte Carlo soft return from s0")
    lines = [f"gap {report['soft_return_gap']:+.3f} ± {report['soft_return_gap_se']:.3f} (se)"]
    for name in ("stored", "on_policy"):
        if name in report:
            lines.append(f"Q - TQ ({name.replace('_', '-')}): {report[name]['bellman_residual_mean']:+.4f} mean, "
                         f"{report[name]['bellman_residual_rms']:.3f} rms")
    ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, va="top", fontsize=7.5,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
