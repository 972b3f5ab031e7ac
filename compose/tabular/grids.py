"""Gridworlds with known composition outcomes, plus seeded random MDPs.

* ``hunt_grid``: 8x8, tasks ``left``, ``right``, ``up`` in the spirit of Hunt et al. 2019,
  Fig. 1. Left+right is incompatible (no state pays both), left+up is compatible (the
  top-left corner pays both).
* ``soft_or_grid``: deterministic (or slippery) first-exit grid with absorbing goals whose
  rewards alone differ between tasks, for the soft-OR of van Niekerk et al. 2019.

States are numbered ``s = row * width + col``; row 0 is the top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from .core import Array

KING_MOVES: dict[str, tuple[int, int]] = {
    "N": (-1, 0), "NE": (-1, 1), "E": (0, 1), "SE": (1, 1),
    "S": (1, 0), "SW": (1, -1), "W": (0, -1), "NW": (-1, -1),
}
COMPASS: dict[str, tuple[int, int]] = {"N": (-1, 0), "E": (0, 1), "S": (1, 0), "W": (0, -1)}


@dataclass(frozen=True)
class Grid:
    """A finite MDP laid out on a ``height x width`` grid.

    ``P[S, A, S]`` (goal rows are zero: goals are absorbing and end the episode after
    their reward is paid), ``rewards[task] -> R[S, A]``, ``goal[S]`` mask, ``start`` state,
    ``moves[A]`` as (d_row, d_col), and the discount ``gamma`` the grid is meant for."""

    P: Array
    rewards: dict[str, Array]
    goal: NDArray[np.bool_]
    start: int
    height: int
    width: int
    moves: tuple[tuple[int, int], ...]
    gamma: float
    notes: str = field(default="")

    @property
    def start_dist(self) -> Array:
        mu = np.zeros(self.P.shape[0])
        mu[self.start] = 1.0
        return mu

    def cell(self, s: int | np.integer) -> tuple[int, int]:
        return divmod(int(s), self.width)

    def stack(self, tasks: list[str]) -> Array:
        """``rewards[N, S, A]`` for the named tasks."""
        return np.stack([self.rewards[t] for t in tasks])


def grid_transitions(
    height: int,
    width: int,
    moves: list[tuple[int, int]],
    goal: Array,
    slip: float = 0.0,
    goals_terminal: bool = True,
) -> Array:
    """``P[S, A, S]`` for moves on a grid; bumping a wall leaves the agent in place. With
    ``slip > 0`` the intended move is replaced by a uniformly random move with that
    probability. Goal states are absorbing: with ``goals_terminal`` their rows are zero
    (the episode ends after the goal's reward), otherwise every action loops back."""
    S, A = height * width, len(moves)

    def step(s: int, a: int) -> int:
        r, c = divmod(s, width)
        r2, c2 = r + moves[a][0], c + moves[a][1]
        return r2 * width + c2 if 0 <= r2 < height and 0 <= c2 < width else s

    det = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            det[s, a, step(s, a)] = 1.0
    P = (1 - slip) * det + slip * det.mean(axis=1, keepdims=True)
    goal = np.asarray(goal, dtype=bool)
    P[goal] = 0.0
    if not goals_terminal:
        P[goal, :, goal] = 1.0
    return P


def hunt_grid(size: int = 8, gamma: float = 0.95) -> Grid:
    """8x8 grid, king moves (8 actions), start at the bottom row, column ``size//2 - 1``.

    Goal cells: the left column, the right column and the top row; they are absorbing
    loops (every action stays), shared by all tasks. Task ``left`` pays 1 per step in the
    left column, ``right`` in the right column, ``up`` in the top row. (Loops rather than
    termination: a terminal goal forfeits future entropy, and for alpha >= 0.05 the
    max-ent optimum then wanders forever instead of finishing.) The corners
    (0, 0) and (0, size-1) belong to two tasks each, so left+up is *compatible*: the
    corner pays 0.5 + 0.5 under equal weights, any other goal at most 0.5. Left+right is
    *incompatible*: no cell pays both. King moves make the corner reachable (from (1, 1))
    without first touching another goal cell."""
    H = W = size
    rows, cols = np.divmod(np.arange(H * W), W)
    zones = {"left": cols == 0, "right": cols == W - 1, "up": rows == 0}
    goal = zones["left"] | zones["right"] | zones["up"]
    moves = list(KING_MOVES.values())
    P = grid_transitions(H, W, moves, goal, goals_terminal=False)
    rewards = {k: np.repeat(z.astype(float)[:, None], len(moves), axis=1) for k, z in zones.items()}
    return Grid(P, rewards, goal, (H - 1) * W + W // 2 - 1, H, W, tuple(moves), gamma,
                notes="goals: left column, right column, top row; corners pay two tasks")


def soft_or_grid(size: int = 6, slip: float = 0.0, step_cost: float = 0.5) -> Grid:
    """First-exit grid for soft-OR (``gamma = 1``), 4 compass moves.

    Two absorbing goals: ``A`` at the top-left corner, ``B`` at the top-right corner. Task
    ``A`` pays +1 at goal A and -1 at goal B, task ``B`` the reverse; every non-goal step
    costs ``step_cost`` in both tasks, so the tasks differ *only* at the absorbing goals.
    ``slip = 0``: deterministic (soft-OR is exact); ``slip > 0``: stochastic (it is not).
    The step cost must exceed ``alpha log 4`` for the undiscounted soft values to be
    finite (the solvers raise ``ConvergenceError`` otherwise)."""
    H = W = size
    moves = list(COMPASS.values())
    a_goal, b_goal = 0, W - 1
    goal = np.zeros(H * W, dtype=bool)
    goal[[a_goal, b_goal]] = True
    P = grid_transitions(H, W, moves, goal, slip=slip)
    base = np.full((H * W, len(moves)), -step_cost)
    rA, rB = base.copy(), base.copy()
    rA[a_goal], rA[b_goal] = 1.0, -1.0
    rB[a_goal], rB[b_goal] = -1.0, 1.0
    return Grid(P, {"A": rA, "B": rB}, goal, (H - 1) * W + W // 2, H, W, tuple(moves), 1.0,
                notes=f"goals A (top-left), B (top-right), slip={slip}")


def random_mdp(
    seed: int, n_states: int = 6, n_actions: int = 3, n_tasks: int = 3, terminate: float = 0.0
) -> tuple[Array, Array]:
    """Seeded random MDP: ``P[s, a] ~ (1 - terminate) * Dirichlet(1)``, rewards
    ``U(-1, 1)``. Returns ``(P[S, A, S], rewards[N, S, A])``."""
    rng = np.random.default_rng(seed)
    P = (1 - terminate) * rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
    return P, rng.uniform(-1, 1, size=(n_tasks, n_states, n_actions))


def reach_probability(P: Array, policy: Array, start: Array, target: Array, steps: int = 64) -> float:
    """Probability of being in a ``target`` state after ``steps`` steps from ``start[S]``
    under ``policy``; with absorbing (looping) targets this is the probability of having
    reached one within ``steps``."""
    P_pi = np.einsum("sa,sat->st", policy, P)
    d = np.asarray(start, dtype=np.float64)
    for _ in range(steps):
        d = d @ P_pi
    return float(d[np.asarray(target, dtype=bool)].sum())
