"""Lockstep evaluation (issue 28): N episodes stepped together, one batched policy call per step, each episode with
its own random stream, so that an episode run in lockstep is the episode run alone, up to the rounding of batched
matrix products. These tests measure how often and how far the twins part, and check that everything that
evaluates gives the same episodes whether it batches or not."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import compose
import envs
import skills
from skills.evaluation import EVAL_SEED
from skills.evaluation.diagnostics import Start, rollout_steps, run_rollouts
from skills.evaluation.episodes import evaluate, run_episodes
from skills.evaluation.lockstep import EnvPool, in_threads, lockstep_episodes, step_threads, stream

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


@pytest.mark.parametrize("spec", ["reach+avoid", "west+east"])
def test_threads_step_the_same_episodes_and_rollouts_bit_for_bit(spec):
    """A lockstep batch's envs stepped by one thread or by two (MuJoCo releases the GIL in ``mj_step``; the point mass
    is numpy): the same episodes and the same rollouts, exactly, on a MuJoCo arm and on a family without MuJoCo."""
    policy = skills.load(spec.split("+")[0])
    seeds = [EVAL_SEED + i for i in range(6)]
    starts = [Start(7), Start(8, prefix=(np.zeros(policy.act_dim, np.float32),) * 3)]
    out = {}
    for threads in (1, 2):
        with step_threads(threads), EnvPool(lambda: envs.make(spec)) as pool:
            episodes = lockstep_episodes(pool, policy, seeds, keep_trace=True)
            rollouts = run_rollouts(pool, policy, starts, 3, 20, key=3)  # the same pool's envs, unwrapped
        out[threads] = (np.concatenate([np.stack(e.actions).ravel() for e in episodes]), [e.total for e in episodes],
                        rollouts.reward, rollouts.next_obs)
    for one, two in zip(out[1], out[2], strict=True):
        np.testing.assert_array_equal(np.asarray(one), np.asarray(two))


def test_in_threads_keeps_order_waits_for_every_run_and_raises_the_first_error():
    assert in_threads(lambda x: x * x, list(range(7)), threads=3) == [x * x for x in range(7)]
    assert in_threads(lambda x: x, [], threads=2) == []
    finished = []

    def work(x):
        if x == 0:
            raise ValueError("first run fails at once")
        time.sleep(0.05)
        finished.append(x)
        return x

    with pytest.raises(ValueError, match="first run fails"):
        in_threads(work, [0, 1, 2, 3], threads=2)
    assert sorted(finished) == [2, 3]  # the helper's run finished before the error reached the caller
    with pytest.raises(ValueError, match="step threads must be >= 1"), step_threads(0):
        pass
    with pytest.raises(ValueError, match="threads must be >= 1"):
        in_threads(lambda x: x, [1, 2], threads=0)
    # called from inside a helper thread it runs inline: a nested call on the same helpers would wait on itself
    nested = in_threads(lambda x: in_threads(lambda y: x * 10 + y, [1, 2], threads=2), [1, 2], threads=2)
    assert nested == [[11, 12], [21, 22]]


def test_envs_rendering_to_a_window_step_in_the_calling_thread():
    import threading

    from skills.evaluation.lockstep import step_all

    class Env:
        def __init__(self, mode):
            self.render_mode, self.thread = mode, None

        def step(self, action):
            self.thread = threading.current_thread()
            return action

    with step_threads(2):
        windows, plain = [Env("human"), Env("human")], [Env(None), Env(None)]
        assert step_all(windows, [1, 2]) == [1, 2] and step_all(plain, [3, 4]) == [3, 4]
    assert all(e.thread is threading.main_thread() for e in windows)
    assert plain[1].thread is not threading.main_thread()


def _threads_in_a_forked_child(queue) -> None:
    queue.put(in_threads(lambda x: x + 1, [1, 2, 3, 4], threads=2))


def test_helper_threads_work_in_a_forked_child():
    """A forked child inherits the parent's executor without its threads: it must make its own, not wait forever."""
    import multiprocessing

    in_threads(lambda x: x, [1, 2], threads=2)  # the parent's helper threads exist
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_threads_in_a_forked_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0, child.exitcode
    assert queue.get(timeout=5) == [2, 3, 4, 5]


def test_a_pool_gives_the_same_envs_wrapped_or_unwrapped():
    with EnvPool(lambda: envs.make("reach")) as pool:
        wrapped = pool.take(2)
        bare = pool.take(2, unwrapped=True)
        assert len(pool.envs) == 2 and [e.unwrapped for e in wrapped] == bare and wrapped[0] is not bare[0]


def test_collision_rates_are_shown_only_where_the_task_reports_collisions():
    """The point mass has no obstacle: its collision rate is a dash in every table, not a 0.00 that claims none
    happened; the arm's is its rate. Metrics saved before the flag existed keep showing their rate."""
    from compose.run.report import comparison_table
    from skills.evaluate import metrics_lines
    from skills.evaluation.episodes import collision_text

    plane = evaluate(skills.load("plane-upper"), lambda: envs.make("plane-upper"), 3, soft=False)
    reach = evaluate(skills.load("reach"), lambda: envs.make("reach+avoid"), 3, soft=False)
    assert plane["collisions_checked"] is False and reach["collisions_checked"] is True
    assert collision_text(plane) == "–" and collision_text(reach) == f"{reach['collision_rate']:.2f}"
    assert collision_text({"collision_rate": 0.25}) == "0.25"
    row = {"env_steps_used": 0, "build_wall_time_s": 0.0}
    cell = lambda metrics: comparison_table({"policy": metrics | row}).splitlines()[2].split("|")[-4].strip()  # noqa: E731
    assert cell(plane) == "–" and cell(reach) == collision_text(reach)
    shown = metrics_lines(plane | {"skill": "plane-upper", "task": "plane-upper", "seed": 0, "deterministic": False})
    assert any("collision rate   –" in line for line in shown)


def _threads_in_force() -> int | None:
    """The step-thread setting in this context: None unless something set it (``share_cores``, ``step_threads``)."""
    from skills.evaluation.lockstep import _THREADS

    return _THREADS.get()


def test_study_workers_share_the_cores_between_them():
    """Two local study workers each step with half the cores' threads; a Ray task (one CPU) with one; ``share_cores``
    sets only its own context."""
    import contextvars

    from compose.study import _call_on_one_cpu, run_local
    from skills.evaluation.lockstep import STEP_THREADS, available_cores, default_threads, share_cores

    outcomes: dict[str, dict] = {}
    run_local([("a", _threads_in_force, ()), ("b", _threads_in_force, ())], 2, outcomes.__setitem__)
    share = max(1, min(STEP_THREADS, available_cores() // 2))
    assert outcomes == {"a": {"ok": True, "result": share}, "b": {"ok": True, "result": share}}
    assert _call_on_one_cpu(_threads_in_force, ()) == {"ok": True, "result": 1}
    before = default_threads()
    context = contextvars.copy_context()
    context.run(share_cores, 3)
    assert context.run(default_threads) == max(1, min(STEP_THREADS, available_cores() // 3))
    assert default_threads() == before == max(1, min(STEP_THREADS, available_cores()))
    with pytest.raises(ValueError, match="processes must be >= 1"):
        share_cores(0)
