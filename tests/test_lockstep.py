"""Lockstep evaluation (issue 28): N episodes stepped together, one batched policy call per step, each episode with
its own random stream, so that an episode run in lockstep is the episode run alone, up to the rounding of batched
matrix products. These tests measure how often and how far the twins part, and check that everything that
evaluates gives the same episodes whether it batches or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import compose
import envs
import skills
from skills.evaluation import EVAL_SEED
from skills.evaluation.diagnostics import Start, rollout_steps, run_rollouts
from skills.evaluation.episodes import evaluate, run_episodes
from skills.evaluation.lockstep import EnvPool, lockstep_episodes, stream

EPISODES = 12


def twins(policy, make_env, deterministic: bool = False) -> tuple[list, list]:
    """The same seeded episodes one at a time (width 1) and all together."""
    seeds = [EVAL_SEED + i for i in range(EPISODES)]
    with EnvPool(make_env) as pool:
        alone = lockstep_episodes(pool, policy, seeds, deterministic, width=1, keep_trace=True)
        together = lockstep_episodes(pool, policy, seeds, deterministic, width=EPISODES, keep_trace=True)
    return alone, together


def departures(alone: list, together: list) -> tuple[int, float]:
    """How many episodes part from their twins (any action more than 1e-5 apart), and the largest action gap."""
    gaps = [max(float(np.max(np.abs(a - b))) for a, b in zip(x.actions, y.actions, strict=True))
            for x, y in zip(alone, together, strict=True)]
    return sum(g > 1e-5 for g in gaps), max(gaps)


@pytest.mark.parametrize("deterministic", [False, True])
def test_a_skills_episodes_in_lockstep_are_its_episodes_alone(deterministic):
    reach = skills.load("reach")
    alone, together = twins(reach, lambda: envs.make("reach+avoid"), deterministic)
    parted, largest = departures(alone, together)
    assert [e.length for e in alone] == [e.length for e in together]
    assert parted <= 1 and largest < 1e-3, (parted, largest)
    np.testing.assert_allclose([e.total for e in alone], [e.total for e in together], atol=1e-3)
    assert [e.success for e in alone] == [e.success for e in together]


def test_a_compositions_episodes_in_lockstep_are_its_episodes_alone():
    composition = compose.load("reach+avoid")
    composition.build(progress=False)  # the shipped cache
    alone, together = twins(composition, lambda: envs.make("reach+avoid"))  # as a user holds it: compose.load's object
    parted, largest = departures(alone, together)
    assert parted <= 1 and largest < 1e-3, (parted, largest)


def test_episode_streams_depend_on_the_episode_alone():
    a, b = stream(10_000), stream(10_000)
    assert torch.equal(torch.randn(5, generator=a), torch.randn(5, generator=b))
    assert not torch.equal(torch.randn(5, generator=stream(10_000)), torch.randn(5, generator=stream(10_001)))
    assert not torch.equal(torch.randn(5, generator=stream(3, 0, 1)), torch.randn(5, generator=stream(3, 1, 0)))


def test_a_pool_is_reused_and_refills_as_episodes_end():
    """Twelve twogoal episodes (they end at different steps) on a pool of four envs: every episode runs to its own
    end, and the pool never grows."""
    policy = skills.load("west+east")
    made = []

    def make():
        made.append(1)
        return envs.make("west+east")

    with EnvPool(make) as pool:
        done = lockstep_episodes(pool, policy, list(range(12)), width=4)
        assert len(made) == 4 and len(pool.envs) == 4
    lengths = [e.length for e in done]
    assert len(set(lengths)) > 1 and all(1 <= n <= envs.get_task("west+east").family.horizon for n in lengths)
    with EnvPool(lambda: envs.make("west+east")) as pool:
        alone = lockstep_episodes(pool, policy, list(range(12)), width=1)
    assert lengths == [e.length for e in alone]


def test_evaluation_reports_the_same_metrics_batched_or_not():
    reach = skills.load("reach")
    make = lambda: envs.make("reach")  # noqa: E731
    torch.manual_seed(0)
    one = evaluate(reach, make, 8, width=1)
    torch.manual_seed(0)
    all_ = evaluate(reach, make, 8, width=8)
    for key in ("success_rate", "return_mean", "collision_rate", "episode_length"):
        assert one[key] == pytest.approx(all_[key], abs=1e-4), key
    assert one["soft_return_mean"] == pytest.approx(all_["soft_return_mean"], abs=1e-3)


def test_a_scripted_controller_still_runs_one_episode_at_a_time():
    env = envs.make("reach")
    straight = run_episodes(env, lambda o: np.clip(o[6:9] / 0.05, -1, 1), 5, seed=EVAL_SEED)
    env.close()
    assert straight["episodes"] == 5 and straight["success_rate"] >= 0.8


def test_rollouts_from_many_starts_step_together_and_match_their_twins():
    reach = skills.load("reach")
    task = envs.get_task("reach")
    steps = rollout_steps(task.reward_range, reach.alpha, reach.act_dim, reach.gamma, 0.5)
    starts = [Start(7), Start(8, prefix=(np.zeros(3, np.float32),) * 3, action=np.ones(3, np.float32))]
    with EnvPool(lambda: envs.make("reach"), unwrapped=True) as pool:
        together = run_rollouts(pool, reach, starts, 3, steps, key=5)
        alone = run_rollouts(pool, reach, starts, 3, steps, key=5, width=1)
    assert together.obs.shape == (6, steps, 12)
    np.testing.assert_allclose(together.action[3:, 0], 1.0)  # the given first action
    assert not np.allclose(together.action[0, 1:], together.action[1, 1:])  # rollouts of a start differ
    np.testing.assert_allclose(together.reward, alone.reward, atol=1e-4)
