"""``python -m compose.tabular``: operator table on the grids and random MDPs, plus a PNG
of the grid policies (composed, DC, GPI, optimal). See docs/tabular.md."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from skills.cli import non_negative_int, positive_float

from .core import CompositionBound, soft_or, soft_or_reward, soft_q_iteration
from .grids import KING_MOVES, Grid, hunt_grid, random_mdp, reach_probability, soft_or_grid
from .report import OPERATORS, OperatorResult, compare_operators, tightness

FIGURE_NAME = "tabular_grid_policies.png"
HUNT_PAIRS = (("left", "right"), ("left", "up"))
RANDOM_WEIGHTS = np.array([0.5, 0.3, 0.2])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m compose.tabular", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/tabular"),
                   help="folder for the PNG (default: runs/tabular; the docs' figure: --out docs)")
    p.add_argument("--alpha", type=positive_float, default=0.05, help="temperature on the 8x8 grid (default 0.05)")
    p.add_argument("--seeds", type=non_negative_int, default=3, help="number of seeded random MDPs (default 3)")
    p.add_argument("--no-plot", action="store_true", help="print the tables only")
    return p.parse_args(argv)


def hunt_rows(grid: Grid, alpha: float) -> dict[str, tuple[dict[str, OperatorResult], CompositionBound]]:
    w = np.array([0.5, 0.5])
    return {"+".join(t): compare_operators(grid.P, grid.stack(list(t)), w, grid.gamma, alpha, grid.start_dist)
            for t in HUNT_PAIRS}


def best_goals(grid: Grid, tasks: list[str]) -> np.ndarray:
    r_w = grid.stack(tasks).mean(0)[:, 0]
    return grid.goal & (r_w == r_w[grid.goal].max())


def _clean(x: float, eps: float = 1e-9) -> float:
    """Print round-off (|x| < eps, e.g. a regret of -4e-15) as 0."""
    return 0.0 if abs(x) < eps else x


def print_hunt(grid: Grid, rows: dict, alpha: float) -> None:
    r, c = grid.cell(grid.start)
    print(f"[1] Hunt et al. 8x8 grid: gamma={grid.gamma}, alpha={alpha}, king moves, start ({r},{c}), w=(0.5,0.5)")
    print("    J = max-ent return from start, ret = reward-only return, P(best) = P(in a best goal")
    print("    cell after 64 steps), |Q-Q*| = max value error of the operator's own Q")
    print(f"    {'task':<11}{'operator':<9}{'J':>8}{'J*-J':>8}{'ret':>8}{'P(best)':>9}{'|Q-Q*|':>10}")
    for task, (res, bound) in rows.items():
        best = best_goals(grid, task.split("+"))
        for i, name in enumerate(OPERATORS):
            o = res[name]
            pb = reach_probability(grid.P, o.policy, grid.start_dist, best)
            print(f"    {task if i == 0 else '':<11}{name:<9}{o.J:8.3f}{_clean(res['optimal'].J - o.J):8.3f}"
                  f"{o.ret:8.3f}{pb:9.2f}{o.value_error:10.1e}")
        s = grid.start
        gap = (bound["Q_composed"] - bound["Q_optimal"])[s].max()
        print(f"    {'':<11}bound at start: max_a Q_w-Q* = {gap:.3f} <= C = {bound['C'][s].max():.3f}"
              f" (paper's D_1/2 form: {bound['C_renyi'][s].max():.3f}); max gap/C = {tightness(bound):.3f}")


def print_random(seeds: int) -> None:
    gamma, alpha = 0.9, 0.5
    print(f"\n[2] Random MDPs: S=6, A=3, N=3 tasks, w={tuple(RANDOM_WEIGHTS.tolist())}, gamma={gamma}, alpha={alpha},"
          " uniform start")
    print(f"    {'seed':<6}{'operator':<9}{'J':>8}{'J*-J':>11}{'|Q-Q*|':>10}   composition bound")
    for seed in range(seeds):
        P, Rs = random_mdp(seed, n_states=6, n_actions=3, n_tasks=3)
        mu = np.full(6, 1 / 6)
        res, bound = compare_operators(P, Rs, RANDOM_WEIGHTS, gamma, alpha, mu)
        gap = bound["Q_composed"] - bound["Q_optimal"]
        notes = [f"min(Q_w-Q*) = {gap.min():.3f} >= 0", f"min(C-gap) = {(bound['C'] - gap).min():.3f} >= 0",
                 f"max gap/C = {tightness(bound):.3f}", ""]
        for i, name in enumerate(OPERATORS):
            o = res[name]
            print(f"    {seed if i == 0 else '':<6}{name:<9}{o.J:8.3f}{_clean(res['optimal'].J - o.J):11.2e}"
                  f"{o.value_error:10.1e}   {notes[i]}")


def print_soft_or() -> None:
    alpha, w = 0.2, np.ones(2)
    print(f"\n[3] Soft-OR grid 6x6: goals A (top-left), B (top-right), step cost 0.5, alpha={alpha}, w=(1,1)")
    print("    composite task pays alpha*log(sum_i w_i exp(r_i/alpha)) at the goals")
    print(f"    {'dynamics':<28}{'gamma':>6}{'max|Q_or-Q*_or|':>18}")
    for slip, gamma in ((0.0, 1.0), (0.1, 1.0), (0.3, 1.0), (0.0, 0.9)):
        g = soft_or_grid(slip=slip)
        Rs = g.stack(["A", "B"])
        Qs = np.stack([soft_q_iteration(g.P, r, gamma, alpha) for r in Rs])
        Q_star = soft_q_iteration(g.P, soft_or_reward(Rs, w, alpha, g.goal), gamma, alpha)
        err = np.max(np.abs(soft_or(Qs, w, alpha) - Q_star))
        label = "deterministic" if slip == 0 else f"stochastic (slip {slip})"
        print(f"    {label:<28}{gamma:>6}{err:18.1e}")


def plot(grid: Grid, rows: dict, alpha: float, path: Path) -> None:
    from skills.evaluation.plots import _pyplot, save_figure

    plt = _pyplot()

    from .core import occupancy

    moves = np.array(list(KING_MOVES.values()), dtype=float)  # (d_row, d_col)
    H, W = grid.height, grid.width
    panels = ("CO", "DC", "GPI", "optimal")
    titles = {"CO": "composed (CO, average)", "DC": "divergence-corrected", "GPI": "max-ent GPI", "optimal": "optimal"}
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(3.3 * len(panels), 3.9 * len(rows)))
    for i, (task, (res, _)) in enumerate(rows.items()):
        r_w = grid.stack(task.split("+")).mean(0)[:, 0]
        for j, name in enumerate(panels):
            ax, o = axes[i, j], res[name]
            occ = occupancy(grid.P, o.policy, grid.gamma, grid.start_dist)
            occ = np.sqrt(occ / occ.max()).reshape(H, W)
            ax.imshow(occ, cmap="Greys", vmin=0, vmax=1, alpha=0.9)
            for s in np.flatnonzero(grid.goal):
                rr, cc = grid.cell(s)
                color = "tab:green" if r_w[s] == r_w.max() else ("tab:olive" if r_w[s] > 0 else "tab:red")
                ax.add_patch(plt.Rectangle((cc - 0.5, rr - 0.5), 1, 1, fill=False, ec=color, lw=2.5))
                ax.text(cc, rr, f"{r_w[s]:g}", ha="center", va="center", fontsize=7, color=color)
            free = np.flatnonzero(~grid.goal)
            mean_move = o.policy[free] @ moves  # expected (d_row, d_col)
            free_rows, free_cols = np.divmod(free, W)
            # y axis points down (row 0 on top), so d_row is used as is.
            ax.quiver(free_cols, free_rows, mean_move[:, 1], mean_move[:, 0], color="tab:blue", angles="xy",
                      scale_units="xy", scale=1.6, width=0.012)
            sr, sc = grid.cell(grid.start)
            ax.plot(sc, sr, marker="*", ms=14, color="tab:orange", mec="k")
            ax.set_title(f"{task}: {titles[name]}\nJ={o.J:.2f}  reward return={o.ret:.2f}", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlim(-0.5, W - 0.5), ax.set_ylim(H - 0.5, -0.5)
    fig.suptitle(f"8x8 grid, gamma={grid.gamma}, alpha={alpha}: arrows = mean move, grey = discounted "
                 "occupancy (sqrt) from the start *;\n"
                 "goal cells (absorbing) labelled with r_w: green = best, olive = less, red = 0", fontsize=9)
    fig.tight_layout(h_pad=1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    grid = hunt_grid()
    rows = hunt_rows(grid, args.alpha)
    print_hunt(grid, rows, args.alpha)
    print_random(args.seeds)
    print_soft_or()
    if not args.no_plot:
        path = args.out / FIGURE_NAME
        plot(grid, rows, args.alpha, path)
        print(f"\nfigure: {path.resolve()}")
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
