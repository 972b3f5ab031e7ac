"""The task families: API contracts, shared dynamics, reward algebra, obstacle placement."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.arm import LAYOUT, OBSTACLE_REL, TARGET_REL, distance_to_segment, sample_scene

ALL_TASKS = list(envs.TASKS)
ARM_TASKS = ["reach", "avoid", "reach+avoid"]


def rollout(name: str, seed: int, actions: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    env = envs.make(name)
    obs, _ = env.reset(seed=seed)
    observations, infos = [obs], []
    for action in actions:
        obs, _, terminated, truncated, info = env.step(action)
        observations.append(obs)
        infos.append(info)
        if terminated or truncated:
            break
    env.close()
    return np.array(observations), infos


def straight_line_episode(env: gym.Env, seed: int) -> tuple[bool, bool, bool]:
    """Drive straight at the target at full speed; returns (reached, collided, blocking)."""
    obs, info = env.reset(seed=seed)
    collided = False
    for _ in range(50):
        to_target = obs[TARGET_REL]
        action = np.clip(to_target / 0.05, -1, 1)
        obs, _, _, truncated, step_info = env.step(action)
        collided |= step_info["collision"]
        if truncated:
            break
    return step_info["checks"]["at_target"], collided, info["obstacle_blocks_path"]


@pytest.mark.parametrize("name", ALL_TASKS)
def test_check_env(name):
    env = envs.make(name)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_registry_lists_tasks_and_registers_with_gymnasium():
    for required in ["reach", "avoid", "reach+avoid", "multigoal"]:
        assert required in envs.TASKS
    for task in envs.TASKS.values():
        assert task.gym_id in gym.registry
        env = gym.make(task.gym_id)
        assert env.spec.max_episode_steps == task.family.horizon
        env.close()


def test_unknown_task_lists_valid_names():
    with pytest.raises(KeyError) as err:
        envs.make("reech")
    message = str(err.value)
    assert "'reach'" in message and "reach+avoid" in message and "multigoal" in message


@pytest.mark.parametrize("name", ALL_TASKS)
def test_seeded_reset_is_reproducible(name):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(20, envs.make(name).action_space.shape[0]))
    first, _ = rollout(name, 3, actions)
    second, _ = rollout(name, 3, actions)
    other, _ = rollout(name, 4, actions)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first[0], other[0])


def test_arm_tasks_share_dynamics():
    actions = np.random.default_rng(1).uniform(-1, 1, size=(50, 3))
    reach, _ = rollout("reach", 7, actions)
    for name in ["avoid", "reach+avoid"]:
        other, _ = rollout(name, 7, actions)
        np.testing.assert_array_equal(reach, other)


@pytest.mark.parametrize("combined", [n for n in ALL_TASKS if "+" in n])
def test_combined_reward_is_mean_of_parts_on_random_batches(combined):
    task = envs.TASKS[combined]
    parts = [envs.TASKS[p] for p in task.parts]
    env = envs.make(combined)
    rng = np.random.default_rng(0)
    obs = rng.normal(scale=0.3, size=(256, env.observation_space.shape[0])).astype(np.float32)
    act = rng.uniform(-1, 1, size=(256, env.action_space.shape[0]))
    expected = np.mean([p.reward(obs, act) for p in parts], axis=0)
    np.testing.assert_allclose(task.reward(obs, act), expected, rtol=0, atol=1e-12)
    assert np.std(expected) > 0  # the batch is not degenerate


@pytest.mark.parametrize("name", ALL_TASKS)
def test_step_reward_equals_batched_reward_and_terms_are_reported(name):
    env = envs.make(name)
    task = envs.TASKS[name]
    env.reset(seed=0)
    for _ in range(10):
        action = env.action_space.sample()
        obs, reward, terminated, _, info = env.step(action)
        assert set(info["reward_terms"]) == set(task.family.terms)
        assert reward == pytest.approx(float(task.reward(obs[None], action[None])[0]), rel=1e-5, abs=1e-6)
        assert isinstance(info["is_success"], bool)
        if terminated:
            break


def test_arm_reward_terms_are_bounded():
    rng = np.random.default_rng(0)
    obs = rng.normal(scale=2.0, size=(10_000, 12))
    for term in envs.TASKS["reach"].reward_terms(obs, np.zeros((10_000, 3))).values():
        assert term.min() >= -1.0 and term.max() <= 0.0


def test_arm_info_flags_collision_and_success():
    env = envs.make("reach+avoid")
    obs, info = env.reset(seed=0)
    # walk into the obstacle
    for _ in range(30):
        obs, _, _, _, step_info = env.step(np.clip(obs[OBSTACLE_REL] / 0.05, -1, 1))
    assert step_info["collision"] and step_info["reward_terms"]["avoid"] == -1.0
    # then reach the target: reach+avoid still fails, because the episode collided
    for _ in range(40):
        obs, _, _, _, step_info = env.step(np.clip(obs[TARGET_REL] / 0.05, -1, 1))
    assert step_info["checks"]["at_target"] and not step_info["is_success"]


def test_obstacle_placement_blocks_about_half_the_straight_paths():
    rng = np.random.default_rng(0)
    blocking = []
    for _ in range(2000):
        target, obstacle, blocks = sample_scene(rng)
        gap = distance_to_segment(obstacle, np.zeros(3), target)
        assert np.linalg.norm(target) >= LAYOUT.min_target_distance
        assert np.all(target >= LAYOUT.target_low) and np.all(target <= LAYOUT.target_high)
        if blocks:
            assert gap < LAYOUT.collision_radius  # a straight reach must hit it
        else:
            assert gap >= LAYOUT.clearance
        assert np.linalg.norm(obstacle) > LAYOUT.collision_radius  # never start in contact
        blocking.append(blocks)
    assert 0.45 < np.mean(blocking) < 0.55


def test_straight_line_controller_reaches_and_collides_about_half():
    env = envs.make("reach+avoid")
    results = [straight_line_episode(env, seed) for seed in range(40)]
    reached = np.mean([r for r, _, _ in results])
    collided = np.array([c for _, c, _ in results])
    blocking = np.array([b for _, _, b in results])
    assert reached >= 0.9
    assert 0.3 <= collided.mean() <= 0.7
    # collisions happen exactly when the obstacle was placed on the path
    assert np.mean(collided == blocking) >= 0.95


def test_workspace_frame_starts_at_origin():
    env = envs.make("reach")
    obs, info = env.reset(seed=5)
    np.testing.assert_allclose(obs[:3], 0.0, atol=1e-3)
    np.testing.assert_allclose(obs[TARGET_REL], info["target"], atol=1e-3)


def test_multigoal_terminates_at_a_goal_with_bonus():
    env = envs.make("multigoal")
    obs, _ = env.reset(seed=0)
    for _ in range(10):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0]))
        if terminated:
            break
    assert terminated and info["is_success"] and info["goal"] == 0
    assert info["reward_terms"]["goal_bonus"] == 1.0


@pytest.mark.render
@pytest.mark.parametrize("name", ["reach+avoid", "multigoal"])
def test_rgb_array_render_is_not_blank(name):
    env = envs.make(name, render_mode="rgb_array", width=160, height=120)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    env.close()
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    assert frame.std() > 10


def test_packages_import_from_outside_the_checkout(tmp_path):
    """The installed project (not the current directory) provides every top-level package."""
    import subprocess
    import sys

    code = "import envs, skills, compose, bench; print(all(m.__file__ for m in (envs, skills, compose, bench)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr


@pytest.mark.render
def test_other_views_and_a_trail_render():
    """``render_view``: another free camera for one frame, with trail spheres drawn into the scene."""
    env = envs.make("reach+avoid", render_mode="rgb_array", width=160, height=120)
    _, info = env.reset(seed=0)
    arm = env.unwrapped.arm
    default = env.render()
    side = env.unwrapped.render_view({"azimuth": 150.0, "elevation": -15.0})
    trail = arm.ee_position() + np.linspace([0, 0, 0], [0.1, 0.0, 0.0], 20)
    with_trail = env.unwrapped.render_view({"azimuth": 150.0, "elevation": -15.0}, trail)
    again = env.render()
    env.close()
    assert side.shape == default.shape and np.abs(side.astype(int) - default).mean() > 5  # another camera
    assert np.abs(with_trail.astype(int) - side).sum() > 0  # the trail is drawn
    np.testing.assert_array_equal(again, default)  # the default camera is unchanged


def test_the_maths_core_imports_without_mujoco():
    """``import skills.sql`` (and the task registry under it) loads neither MuJoCo nor dm_control: a fresh
    interpreter, so what this test process imported before does not count."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, skills.sql, envs; print(sorted(m for m in ('mujoco', 'dm_control') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_a_mujoco_gl_that_mujoco_would_refuse_is_ignored_with_a_warning():
    """The review: ``MUJOCO_GL=nonsense`` made ``import mujoco`` raise, failing every physics test. envs now ignores a
    value MuJoCo does not take (warning), and chooses a backend as if it were unset."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = "import envs, mujoco, os; print('ok', os.environ.get('MUJOCO_GL') != 'nonsense')"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MUJOCO_GL": "nonsense"})
    assert done.returncode == 0 and done.stdout.strip() == "ok True", done.stderr
    assert "MUJOCO_GL='nonsense' is not a value MuJoCo takes here" in done.stderr
