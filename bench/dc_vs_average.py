"""Why does divergence correction trail averaging on reach+avoid's success? A paired measurement:

    python -m bench.dc_vs_average [--episodes 300] [--seed 30000] [--operator-setting KEY=NUMBER] [--json PATH]

Both compositions (``average``: ``Q_w``; ``dc``: ``Q_w - C_w``, Hunt et al. 2019) act on the same seeded episodes
(seeds ``--seed`` onward, disjoint from the 10000-range the reports use), stochastic. Reported: success and return
of each, the paired differences (dc - average) with 95% bootstrap CIs over episodes, the reward terms, collisions,
and the same split by whether the obstacle sits on the straight path (the arm family's ``on_path`` episodes, half of
them). Also DC's correction ``C_w`` along its own episodes, near the obstacle and away from it, how each policy
ends near the target (final distance, the spread and direction of its actions there), and the action-slopes of
``Q_w`` and ``C_w`` by distance to the target: where DC tilts the energy is where the two policies differ.
``--operator-setting`` sets one of DC's settings (e.g. ``target_update_interval=100``, a 4x longer TD fit of ``C_w``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from compose.run.cli import add_operator_setting_argument
from skills.cli import at_least

from .cli import run_measurement

SPEC = "reach+avoid"


def paired_ci(diff: np.ndarray, reps: int = 10_000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the mean of per-episode differences."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(reps, len(diff)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def evaluate(policy, episodes: int, seed: int, library: str | None) -> list:
    """Seeded stochastic episodes of ``policy`` on the combined task, traced."""
    import envs
    from skills.evaluation.lockstep import EnvPool, lockstep_episodes

    torch.manual_seed(seed)
    with EnvPool(lambda: envs.make(SPEC)) as pool:
        return lockstep_episodes(pool, policy, [seed + i for i in range(episodes)], keep_trace=True)


def correction_along(composition, built, done: list) -> dict:
    """DC's ``C_w`` at the states and actions of its own episodes, split by distance to the obstacle (obs[9:12] is
    the obstacle relative to the end effector, metres)."""
    obs = np.concatenate([np.asarray(e.obs, np.float32) for e in done])
    act = np.concatenate([np.asarray(e.actions, np.float32) for e in done])
    with torch.no_grad():
        energy = np.asarray(built.q(obs, act), np.float64)
        q_w = np.asarray(composition.q_w(obs, act), np.float64)
    c_w = q_w - energy
    near = np.linalg.norm(obs[:, 9:12], axis=-1) < 0.1
    return {"C_w_mean": float(c_w.mean()), "C_w_near_obstacle_mean": float(c_w[near].mean()) if near.any() else None,
            "C_w_far_mean": float(c_w[~near].mean()), "near_share": float(near.mean()),
            "C_w_spread_near": float(c_w[near].std()) if near.any() else None}


def blocks_path(episode, clearance: float = 0.06) -> bool:
    """Does the obstacle sit on the straight start-target segment (within ``clearance``)? From the first
    observation: target relative to the end effector at obs[6:9], obstacle at obs[9:12]."""
    first = np.asarray(episode.first_obs if episode.first_obs is not None else episode.obs[0], np.float64)
    target, obstacle = first[6:9], first[9:12]
    along = float(np.clip(obstacle @ target / max(float(target @ target), 1e-12), 0.0, 1.0))
    return bool(np.linalg.norm(obstacle - along * target) < clearance)


def near_target(composition, done: list, radius: float = 0.05, samples: int = 64) -> dict:
    """How each policy ends: the final distance to the target (obs[6:9]), and at the states of its episodes within
    ``radius`` of the target, the spread of its actions (mean per-dimension std of ``samples`` draws) and how far
    the mean draw points at the target (cosine)."""
    final = np.array([np.linalg.norm(np.asarray(e.final_obs if e.final_obs is not None else e.obs[-1])[6:9])
                      for e in done])
    obs = np.concatenate([np.asarray(e.obs, np.float32) for e in done])
    close = obs[np.linalg.norm(obs[:, 6:9], axis=-1) < radius][:2000]
    out = {"final_distance_mean": float(final.mean()), "final_distance_median": float(np.median(final)),
           "states_near_target": int(len(close))}
    if len(close):
        draws = np.asarray(composition.sample(close, samples), np.float64)  # [N, samples, 3]
        mean = draws.mean(axis=1)
        cos = np.sum(mean * close[:, 6:9], axis=-1) / (np.linalg.norm(mean, axis=-1) * np.linalg.norm(close[:, 6:9],
                                                                                                         axis=-1) + 1e-9)
        out |= {"action_std_near_target": float(draws.std(axis=1).mean()), "mean_action_norm": float(
            np.linalg.norm(mean, axis=-1).mean()), "cosine_to_target": float(cos.mean())}
    return out


def slopes(composition, built, done: list, bands=((0.0, 0.05), (0.05, 0.15), (0.15, 10.0))) -> list[dict]:
    """Where DC's correction tilts the energy: at DC's own states, by distance to the target, the action-gradient of
    ``Q_w`` and of ``C_w`` at one sampled action (norms, their median ratio, and the cosine between ``dQ_w/da`` and
    ``-dC_w/da``: near 0 means the correction's slope is unrelated to the task's)."""
    obs = np.concatenate([np.asarray(e.obs, np.float32) for e in done])
    dist = np.linalg.norm(obs[:, 6:9], axis=-1)
    out = []
    for lo, hi in bands:
        o = torch.as_tensor(obs[(dist >= lo) & (dist < hi)][:1500])
        if not len(o):
            continue
        a = torch.as_tensor(np.asarray(composition.sample(o.numpy(), 1))[:, 0]).requires_grad_(True)
        (g_q,) = torch.autograd.grad(composition.q_w(o, a).sum(), a)
        b = a.detach().clone().requires_grad_(True)
        (g_c,) = torch.autograd.grad((composition.q_w(o, b) - built.q(o, b)).sum(), b)
        out.append({"distance": [lo, hi], "states": int(len(o)), "dQ_w_da": float(g_q.norm(dim=1).mean()),
                    "dC_w_da": float(g_c.norm(dim=1).mean()),
                    "ratio_median": float((g_c.norm(dim=1) / g_q.norm(dim=1).clamp_min(1e-9)).median()),
                    "cosine": float(torch.nn.functional.cosine_similarity(g_q, -g_c).mean())})
    return out


def summary(done: list, mask: np.ndarray | None = None) -> dict:
    chosen = [e for i, e in enumerate(done) if mask is None or mask[i]]
    return {"episodes": len(chosen), "success": float(np.mean([e.success for e in chosen])),
            "return": float(np.mean([e.total for e in chosen])), "collisions": float(np.mean([e.collided for e in chosen])),
            "terms": {t: float(np.mean([e.terms[t] for e in chosen])) for t in chosen[0].terms}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dc_vs_average", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=at_least(2), default=300, help="paired episodes (default 300)")
    parser.add_argument("--seed", type=at_least(0), default=30_000, help="first episode seed (default 30000)")
    parser.add_argument("--library", help="skill library (default: trained/)")
    add_operator_setting_argument(parser, "applied to dc")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return run_measurement(lambda: measure(args.episodes, args.seed, args.library, dict(args.operator_setting)), args.json)


def operators(dc_settings: dict[str, float] | None = None) -> dict:
    """The two operators compared: averaging, and DC with ``dc_settings`` (its fields; a wrong one is refused here)."""
    from compose.operators import make_operator

    return {"average": make_operator("average"), "dc": make_operator("dc", **(dc_settings or {}))}


def measure(episodes: int, seed: int, library: str | None, dc_settings: dict[str, float] | None = None) -> dict:
    """The whole measurement (module docstring), as one JSON-ready dict; ``dc_settings`` set DC's operator fields."""
    import compose

    compared = operators(dc_settings)  # before anything loads
    runs, builds, comps = {}, {}, {}
    for op, operator in compared.items():
        comps[op] = compose.load(SPEC, library=library, seed=seed, operator=operator)
        builds[op] = comps[op].build(progress=False)
        runs[op] = evaluate(comps[op].policy, episodes, seed, library)
    on_path = np.array([blocks_path(e) for e in runs["average"]])
    out: dict = {"spec": SPEC, "episodes": episodes, "seed": seed, "dc_settings": comps["dc"].operator.settings(),
                 "operators": {op: summary(done) for op, done in runs.items()},
                 "obstacle_on_path": {op: summary(done, on_path) for op, done in runs.items()},
                 "obstacle_off_path": {op: summary(done, ~on_path) for op, done in runs.items()}}
    for key, attr in (("success", "success"), ("return", "total")):
        diff = np.array([float(getattr(d, attr)) - float(getattr(a, attr)) for d, a in zip(runs["dc"], runs["average"],
                                                                                              strict=True)])
        out[f"{key}_dc_minus_average"] = {"mean": float(diff.mean()), "ci95": paired_ci(diff)}
    out["on_path_share"] = float(on_path.mean())
    out["near_target"] = {op: near_target(comps[op], done) for op, done in runs.items()}
    out["slopes"] = slopes(comps["dc"], builds["dc"], runs["dc"])
    out["correction"] = correction_along(comps["dc"], builds["dc"], runs["dc"])
    return out


if __name__ == "__main__":
    sys.exit(main())
