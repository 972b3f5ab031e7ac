"""Exact maximum-entropy RL and skill composition on finite MDPs.

Conventions (all arrays float64, vectorised numpy, no sampling):

* ``P[s, a, s']``: transition probabilities, shape ``[S, A, S]``. Rows may sum to *less*
  than one: the missing mass is termination (the episode ends, the value after it is 0).
  A terminal state is one whose rows are all zero.
* ``R[s, a]``: reward, shape ``[S, A]``. Several tasks are stacked as ``rewards[N, S, A]``.
* ``Q[s, a]``: soft action values, shape ``[S, A]``; ``Qs[N, S, A]`` for N skills.
* ``policy[s, a]``: action probabilities, shape ``[S, A]``, rows sum to 1.
* ``gamma`` in (0, 1]; ``gamma == 1`` is allowed for first-exit problems (every policy
  must terminate with probability 1, otherwise the solvers raise ``ConvergenceError``).
* ``alpha`` > 0 is the temperature; actions use the counting measure, so the soft value
  of a state is ``alpha * log sum_a exp(Q(s, a) / alpha)``.

Every iterative solver takes ``tol`` (an absolute bound on the sup-norm error of the
returned array, ``gamma/(1-gamma) * ||x_{k+1} - x_k||``; for ``gamma == 1`` only the last
step size is checked) and ``max_iter``, and raises ``ConvergenceError`` instead of
returning an unconverged array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

DEFAULT_TOL = 1e-10
DEFAULT_MAX_ITER = 100_000


class ConvergenceError(RuntimeError):
    """An iterative solver did not reach its tolerance within ``max_iter`` iterations
    (or produced non-finite values, e.g. ``gamma == 1`` with a policy that never ends)."""


class SolverOptions(TypedDict):
    """The stopping settings every iterative solver takes."""

    tol: float
    max_iter: int


class CompositionBound(TypedDict):
    """What ``composition_bound`` returns (see there)."""

    Q_skills: Array
    Q_composed: Array
    Q_optimal: Array
    delta: Array
    C: Array
    delta_renyi: Array | None
    C_renyi: Array | None


# ----------------------------------------------------------------------------- checks


def _check_mdp(P: ArrayLike, R: ArrayLike, gamma: float) -> tuple[Array, Array]:
    P = np.asarray(P, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    if P.ndim != 3 or P.shape[0] != P.shape[2]:
        raise ValueError(f"P must have shape [S, A, S], got {P.shape}")
    if R.shape != P.shape[:2]:
        raise ValueError(f"R must have shape {P.shape[:2]} (= [S, A]), got {R.shape}")
    if not (np.all(np.isfinite(P)) and np.all(np.isfinite(R))):
        raise ValueError("P and R must be finite")
    if np.any(P < 0) or np.any(P.sum(-1) > 1 + 1e-9):
        raise ValueError("P must be non-negative with rows summing to <= 1 (deficit = termination)")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
    return P, R


def _check_alpha(alpha: float, allow_zero: bool = False) -> None:
    if not (alpha > 0 or (allow_zero and alpha == 0)) or not np.isfinite(alpha):
        raise ValueError(f"alpha must be {'>= 0' if allow_zero else '> 0'} and finite, got {alpha}")


def _check_policy(policy: ArrayLike, shape: tuple[int, ...]) -> Array:
    policy = np.asarray(policy, dtype=np.float64)
    if policy.shape != shape:
        raise ValueError(f"policy must have shape {shape}, got {policy.shape}")
    if np.any(policy < 0) or not np.allclose(policy.sum(-1), 1.0, atol=1e-9):
        raise ValueError("policy rows must be probability distributions")
    return policy


def check_weights(weights: ArrayLike, n: int) -> Array:
    """Validate composition weights: shape ``[n]``, non-negative, summing to 1.

    Weights are *refused*, never normalised silently, because they define the target task
    ``r_w = sum_i w_i r_i``: rescaling them changes the task and its temperature."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"need one weight per skill: shape ({n},), got {w.shape}")
    if np.any(~np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1.0) > 1e-9:
        raise ValueError(f"weights must be non-negative and sum to 1 (not normalised for you), got {w}")
    return w


def _stack(arrays: ArrayLike | Sequence[ArrayLike], shape: tuple[int, ...], name: str) -> Array:
    x = np.asarray(arrays, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != shape:
        raise ValueError(f"{name} must have shape [N, {shape[0]}, {shape[1]}], got {x.shape}")
    return x


# ----------------------------------------------------------------------- primitives


def logsumexp(x: Array, axis: int = -1) -> Array:
    """``log sum exp(x)`` along ``axis``, stable for large |x| and for -inf entries."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def soft_value(Q: Array, alpha: float) -> Array:
    """Soft value ``V(s) = alpha * log sum_a exp(Q(s,a) / alpha)``. ``Q[..., A] -> V[...]``."""
    return alpha * logsumexp(np.asarray(Q, dtype=np.float64) / alpha, axis=-1)


def soft_policy(Q: Array, alpha: float) -> Array:
    """Boltzmann policy ``pi(a|s) = exp((Q(s,a) - V(s)) / alpha)``. ``Q[..., A] -> pi[..., A]``."""
    Q = np.asarray(Q, dtype=np.float64)
    pi = np.exp((Q - soft_value(Q, alpha)[..., None]) / alpha)
    return pi / pi.sum(-1, keepdims=True)


def entropy(policy: Array) -> Array:
    """Shannon entropy ``H(s) = -sum_a pi log pi`` (with 0 log 0 = 0). ``[S, A] -> [S]``."""
    logp = np.log(np.where(policy > 0, policy, 1.0))
    return -np.sum(policy * logp, axis=-1)


def expected_next(P: Array, V: Array) -> Array:
    """``E_{s'~P(.|s,a)} V(s')``: ``P[S, A, S], V[S] -> [S, A]`` (termination contributes 0)."""
    return P @ V


def policy_soft_value(Q: Array, policy: Array, alpha: float) -> Array:
    """``V^pi(s) = sum_a pi(a|s) (Q(s,a) - alpha log pi(a|s))``. ``[S, A] -> [S]``."""
    return np.sum(policy * Q, axis=-1) + alpha * entropy(policy)


def soft_bellman_optimality_backup(Q: Array, P: Array, R: Array, gamma: float, alpha: float) -> Array:
    """``(T Q)(s,a) = R(s,a) + gamma E_{s'} [alpha log sum_a' exp(Q(s',a')/alpha)]``."""
    return R + gamma * expected_next(P, soft_value(Q, alpha))


def soft_bellman_backup(
    Q: Array, P: Array, R: Array, policy: Array, gamma: float, alpha: float
) -> Array:
    """Soft backup for a fixed policy (entropy bonus included):
    ``(T^pi Q)(s,a) = R(s,a) + gamma E_{s'} sum_a' pi(a'|s') (Q(s',a') - alpha log pi(a'|s'))``."""
    return R + gamma * expected_next(P, policy_soft_value(Q, policy, alpha))


def fixed_point(
    operator: Callable[[Array], Array],
    x0: Array,
    gamma: float,
    tol: float,
    max_iter: int,
    what: str,
    trace: list[Array] | None = None,
) -> Array:
    """Iterate a gamma-contraction ``x <- operator(x)`` until the a-posteriori error bound
    ``gamma / (1 - gamma) * ||x_{k+1} - x_k||_inf`` is at most ``tol`` (``gamma == 1``:
    until the step itself is at most ``tol``). Each iterate is appended to ``trace`` if given.
    Raises ``ConvergenceError`` after ``max_iter`` iterations or on non-finite values."""
    factor = gamma / (1.0 - gamma) if gamma < 1 else 1.0
    x, bound = np.asarray(x0, dtype=np.float64), np.inf
    for k in range(1, max_iter + 1):
        x_new = operator(x)
        if not np.all(np.isfinite(x_new)):
            raise ConvergenceError(f"{what}: non-finite values at iteration {k} (diverging?)")
        bound = factor * float(np.max(np.abs(x_new - x), initial=0.0))
        x = x_new
        if trace is not None:
            trace.append(x)
        if bound <= tol:
            return x
    raise ConvergenceError(
        f"{what} did not converge in {max_iter} iterations: error bound {bound:.3e} > tol {tol:.1e}"
        " (raise max_iter, loosen tol, or check gamma == 1 problems terminate)"
    )


# ---------------------------------------------------------------- single-task solvers


def soft_q_iteration(
    P: ArrayLike,
    R: ArrayLike,
    gamma: float,
    alpha: float,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    Q0: Array | None = None,
) -> Array:
    """Optimal soft Q-function, the fixed point of ``Q = R + gamma P soft_value(Q)``.
    ``P[S, A, S], R[S, A] -> Q*[S, A]``."""
    P, R = _check_mdp(P, R, gamma)
    _check_alpha(alpha)
    x0 = np.zeros_like(R) if Q0 is None else np.asarray(Q0, dtype=np.float64)
    return fixed_point(
        lambda Q: soft_bellman_optimality_backup(Q, P, R, gamma, alpha),
        x0, gamma, tol, max_iter, "soft Q-iteration",
    )


def soft_policy_evaluation(
    P: ArrayLike,
    R: ArrayLike,
    policy: ArrayLike,
    gamma: float,
    alpha: float,
    *,
    max_iter: int = DEFAULT_MAX_ITER,
    Q0: Array | None = None,
    trace: list[Array] | None = None,
) -> Array:
    """Soft Q-function of a fixed policy by iterating ``Q <- T^pi Q`` (see
    ``soft_bellman_backup``) to ``DEFAULT_TOL``. Pass a list as ``trace`` to receive every iterate ``Q_k``
    (the contraction test measures ``||Q_k - Q^pi||``). ``-> Q^pi[S, A]``."""
    P, R = _check_mdp(P, R, gamma)
    _check_alpha(alpha, allow_zero=True)
    policy = _check_policy(policy, R.shape)
    x0 = np.zeros_like(R) if Q0 is None else np.asarray(Q0, dtype=np.float64)
    return fixed_point(
        lambda Q: soft_bellman_backup(Q, P, R, policy, gamma, alpha),
        x0, gamma, DEFAULT_TOL, max_iter, "soft policy evaluation", trace,
    )


def soft_policy_evaluation_exact(
    P: ArrayLike, R: ArrayLike, policy: ArrayLike, gamma: float, alpha: float
) -> Array:
    """Soft Q-function of a fixed policy by one linear solve:
    ``V = (I - gamma P_pi)^{-1} (r_pi + alpha H(pi))``, ``Q = R + gamma P V``.
    ``alpha = 0`` gives the ordinary (entropy-free) Q-function. For ``gamma == 1`` the
    policy must terminate with probability 1 (spectral radius of ``P_pi`` < 1), else
    ``ConvergenceError``."""
    P, R = _check_mdp(P, R, gamma)
    _check_alpha(alpha, allow_zero=True)
    policy = _check_policy(policy, R.shape)
    P_pi = np.einsum("sa,sat->st", policy, P)
    if gamma == 1 and np.max(np.abs(np.linalg.eigvals(P_pi))) > 1 - 1e-10:
        raise ConvergenceError("policy evaluation with gamma=1: the policy does not terminate surely")
    r_pi = np.sum(policy * R, axis=-1) + alpha * entropy(policy)
    V = np.linalg.solve(np.eye(P.shape[0]) - gamma * P_pi, r_pi)
    return R + gamma * expected_next(P, V)


def soft_policy_iteration(
    P: ArrayLike,
    R: ArrayLike,
    gamma: float,
    alpha: float,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = 1_000,
    policy0: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Soft policy iteration: exact evaluation ``Q_k = Q^{pi_k}`` then improvement
    ``pi_{k+1} = soft_policy(Q_k)``, from the uniform policy unless ``policy0`` is given.
    Stops when the optimality residual bound ``||T Q_k - Q_k|| / (1 - gamma) <= tol``.
    Returns ``(policy[S, A], Q[S, A], history[K, S, A])`` with ``history[k] = Q^{pi_k}``;
    soft policy improvement makes ``history`` non-decreasing in k, elementwise."""
    P, R = _check_mdp(P, R, gamma)
    _check_alpha(alpha)
    policy = np.full(R.shape, 1.0 / R.shape[1]) if policy0 is None else _check_policy(policy0, R.shape)
    factor = 1.0 / (1.0 - gamma) if gamma < 1 else 1.0
    history: list[Array] = []
    for _ in range(max_iter):
        Q = soft_policy_evaluation_exact(P, R, policy, gamma, alpha)
        history.append(Q)
        residual = np.max(np.abs(soft_bellman_optimality_backup(Q, P, R, gamma, alpha) - Q))
        if factor * residual <= tol:
            return soft_policy(Q, alpha), Q, np.stack(history)
        policy = soft_policy(Q, alpha)
    raise ConvergenceError(f"soft policy iteration did not converge in {max_iter} iterations")


# ---------------------------------------------------------------------- composition


def composed_q(Qs: Array, weights: Array) -> Array:
    """Haarnoja et al. 2018 composition: ``Q_w = sum_i w_i Q_i``. ``[N, S, A] -> [S, A]``."""
    return np.einsum("i,isa->sa", weights, Qs)


def composition_gap(Qs: Array, weights: Array, alpha: float) -> Array:
    """Per-state gap ``delta(s) = sum_i w_i V_i(s) - V_w(s) >= 0`` (Hoelder), where
    ``V_w`` is the soft value of ``Q_w = sum_i w_i Q_i``. Equals
    ``-alpha log sum_a prod_i pi_i(a|s)^{w_i}``. ``[N, S, A] -> [S]``."""
    return weights @ soft_value(Qs, alpha) - soft_value(composed_q(Qs, weights), alpha)


def renyi_half_divergence(p: Array, q: Array) -> Array:
    """``D_1/2(p||q) = -2 log sum_a sqrt(p(a) q(a))`` per state. ``[S, A] x2 -> [S]``."""
    return -2.0 * np.log(np.sum(np.sqrt(p * q), axis=-1))


def hard_max_correction(
    P: Array, delta: Array, gamma: float, *, tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER
) -> Array:
    """Fixed point of ``C(s,a) = gamma E_{s'} [delta(s') + max_a' C(s',a')]``.
    ``P[S, A, S], delta[S] -> C[S, A] >= 0``."""
    return fixed_point(
        lambda C: gamma * expected_next(P, delta + C.max(-1)),
        np.zeros(P.shape[:2]), gamma, tol, max_iter, "composition bound C",
    )


def composition_bound(
    P: ArrayLike,
    rewards: ArrayLike,
    weights: ArrayLike,
    gamma: float,
    alpha: float,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
) -> CompositionBound:
    """Haarnoja et al. 2018 bound ``Q_composed >= Q_optimal >= Q_composed - C``.

    ``rewards[N, S, A]``, ``weights[N]`` (non-negative, sum 1, refused otherwise). Keys:

    * ``Q_skills[N, S, A]``: optimal soft Q of each ``r_i``;
    * ``Q_composed[S, A] = sum_i w_i Q_i``; ``Q_optimal[S, A]``: optimal soft Q of ``r_w``;
    * ``delta[S] = sum_i w_i V_i - V_w`` and ``C[S, A]``: the **tight** bound, fixed point of
      ``C = gamma P (delta + max_a C)``;
    * ``delta_renyi[S] = alpha D_1/2(pi_1||pi_2)`` and ``C_renyi[S, A]``: the paper's looser
      form (``delta_renyi = 2 delta``); only defined for two skills with equal weights,
      ``None`` otherwise.
    """
    P = np.asarray(P, dtype=np.float64)
    Rs = _stack(rewards, P.shape[:2], "rewards")
    w = check_weights(weights, Rs.shape[0])
    kw = SolverOptions(tol=tol, max_iter=max_iter)
    Qs = np.stack([soft_q_iteration(P, r, gamma, alpha, **kw) for r in Rs])
    Q_composed = composed_q(Qs, w)
    Q_optimal = soft_q_iteration(P, composed_q(Rs, w), gamma, alpha, **kw)
    delta = composition_gap(Qs, w, alpha)
    out = CompositionBound(
        Q_skills=Qs, Q_composed=Q_composed, Q_optimal=Q_optimal,
        delta=delta, C=hard_max_correction(P, delta, gamma, **kw),
        delta_renyi=None, C_renyi=None,
    )
    if len(w) == 2 and w[0] == w[1]:
        pi1, pi2 = soft_policy(Qs[0], alpha), soft_policy(Qs[1], alpha)
        delta_renyi = alpha * renyi_half_divergence(pi1, pi2)
        out["delta_renyi"] = delta_renyi
        out["C_renyi"] = hard_max_correction(P, delta_renyi, gamma, **kw)
    return out


def divergence_correction_term(
    P: ArrayLike,
    Qs: ArrayLike,
    weights: ArrayLike,
    gamma: float,
    alpha: float,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
) -> Array:
    """Hunt et al. 2019 correction, N skills: fixed point of
    ``C(s,a) = -alpha gamma E_{s'} log sum_a' prod_i pi_i(a'|s')^{w_i} exp(-C(s',a')/alpha)``.
    Uses only the skills' Q-functions and the transitions, no reward.
    ``Qs[N, S, A] -> C[S, A]``; then ``Q*_w = sum_i w_i Q_i - C``."""
    P = np.asarray(P, dtype=np.float64)
    Qs = _stack(Qs, P.shape[:2], "Qs")
    w = check_weights(weights, Qs.shape[0])
    _check_alpha(alpha)
    # alpha * log prod_i pi_i^{w_i} = sum_i w_i (Q_i - V_i), kept in the log domain.
    log_mix = np.einsum("i,isa->sa", w, Qs - soft_value(Qs, alpha)[..., None])
    return fixed_point(
        lambda C: -gamma * expected_next(P, soft_value(log_mix - C, alpha)),
        np.zeros(P.shape[:2]), gamma, tol, max_iter, "divergence correction",
    )


def divergence_correction(
    P: ArrayLike,
    rewards: ArrayLike,
    weights: ArrayLike,
    gamma: float,
    alpha: float,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
) -> Array:
    """Divergence-corrected composition ``Q_DC = sum_i w_i Q_i - C`` (exact: equals the
    optimal soft Q of ``r_w``). ``rewards[N, S, A], weights[N] -> Q[S, A]``."""
    P = np.asarray(P, dtype=np.float64)
    Rs = _stack(rewards, P.shape[:2], "rewards")
    w = check_weights(weights, Rs.shape[0])
    kw = SolverOptions(tol=tol, max_iter=max_iter)
    Qs = np.stack([soft_q_iteration(P, r, gamma, alpha, **kw) for r in Rs])
    return composed_q(Qs, w) - divergence_correction_term(P, Qs, w, gamma, alpha, **kw)


def gpi(
    P: ArrayLike,
    rewards: ArrayLike,
    weights: ArrayLike,
    gamma: float,
    alpha: float,
    *,
    policies: Sequence[ArrayLike] | np.ndarray | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
) -> dict[str, Array]:
    """Max-entropy generalised policy improvement (Hunt et al. 2019).

    Each constituent policy ``pi_i`` (default: the optimal soft policy of ``r_i``; or pass
    ``policies[N, S, A]``) is evaluated, with ``soft_policy_evaluation_exact``, on the *new*
    reward ``r_w = sum_i w_i r_i``. Keys:

    * ``Q_constituents[N, S, A]``: ``Q^{pi_i}_w``;
    * ``Q[S, A] = max_i Q^{pi_i}_w`` (the GPI value, a lower bound on ``Q_policy``);
    * ``policy[S, A] ∝ exp(Q / alpha)``;
    * ``Q_policy[S, A]``: the exact soft Q of ``policy`` on ``r_w`` (what GPI achieves).
    """
    P = np.asarray(P, dtype=np.float64)
    Rs = _stack(rewards, P.shape[:2], "rewards")
    w = check_weights(weights, Rs.shape[0])
    R_w = composed_q(Rs, w)
    if policies is None:
        policies = [soft_policy(soft_q_iteration(P, r, gamma, alpha, tol=tol, max_iter=max_iter), alpha) for r in Rs]
    Q_constituents = np.stack([soft_policy_evaluation_exact(P, R_w, pi, gamma, alpha) for pi in policies])
    Q = Q_constituents.max(0)
    policy = soft_policy(Q, alpha)
    return dict(
        Q_constituents=Q_constituents, Q=Q, policy=policy,
        Q_policy=soft_policy_evaluation_exact(P, R_w, policy, gamma, alpha),
    )


def soft_or(Qs: ArrayLike, weights: ArrayLike, alpha: float) -> Array:
    """Soft-OR (van Niekerk et al. 2019): ``Q = alpha log sum_i w_i exp(Q_i / alpha)``.

    Weights are included and must be positive; they need *not* sum to 1 (the composite task
    is the one whose goal rewards are ``alpha log sum_i w_i exp(r_i(g) / alpha)``, see
    ``soft_or_reward``). Exact for deterministic, undiscounted (``gamma = 1``) first-exit
    MDPs whose tasks differ only in the rewards at absorbing goal states.
    ``Qs[N, S, A] -> [S, A]``."""
    Qs = np.asarray(Qs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    _check_alpha(alpha)
    if w.shape != Qs.shape[:1] or np.any(~(w > 0)):
        raise ValueError(f"soft_or needs one positive weight per skill, got {w}")
    return alpha * logsumexp(Qs / alpha + np.log(w)[:, None, None], axis=0)


def soft_or_reward(rewards: ArrayLike, weights: ArrayLike, alpha: float, goal: ArrayLike) -> Array:
    """Reward of the soft-OR task: ``alpha log sum_i w_i exp(r_i / alpha)`` at goal states
    (``goal[S]`` boolean), the common reward elsewhere (where all ``r_i`` must agree).
    ``rewards[N, S, A] -> [S, A]``."""
    Rs = np.asarray(rewards, dtype=np.float64)
    goal = np.asarray(goal, dtype=bool)
    if not np.allclose(Rs[:, ~goal], Rs[:1, ~goal]):
        raise ValueError("soft-OR tasks must share their rewards outside the goal states")
    return np.where(goal[:, None], soft_or(Rs, weights, alpha), Rs[0])


# -------------------------------------------------------------------- evaluation


def policy_return(
    P: ArrayLike, R: ArrayLike, policy: ArrayLike, gamma: float, start: ArrayLike, alpha: float = 0.0
) -> float:
    """Expected return ``sum_s mu(s) V^pi(s)`` from start distribution ``mu[S]``;
    ``alpha = 0``: task reward only, ``alpha > 0``: the max-ent objective."""
    Q = soft_policy_evaluation_exact(P, R, policy, gamma, alpha)
    return float(np.asarray(start, dtype=np.float64) @ policy_soft_value(Q, np.asarray(policy), alpha))


def occupancy(P: ArrayLike, policy: ArrayLike, gamma: float, start: ArrayLike) -> Array:
    """Discounted state occupancy ``d = mu^T (I - gamma P_pi)^{-1}``. ``-> d[S]``."""
    P_pi = np.einsum("sa,sat->st", np.asarray(policy), np.asarray(P))
    return np.linalg.solve((np.eye(len(P_pi)) - gamma * P_pi).T, np.asarray(start, dtype=np.float64))
