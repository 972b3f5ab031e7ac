"""The pusher family: API contract, shared dynamics, reward algebra, physics and task layout."""

import numpy as np
import pytest

import envs
from envs.pusher import (
    FAMILY,
    GOAL,
    JOINT_COS,
    JOINT_SIN,
    LAYOUT,
    OBS_DIM,
    PUCK_POS,
    PUCK_REL,
    PUCK_VEL,
    TIP_POS,
    PusherEnv,
)

PUSHER_TASKS = ["push-x", "push-y", "push-x+push-y"]
AXES = {"push-x": np.array([1.0, 0.0]), "push-y": np.array([0.0, 1.0]), "push-x+push-y": np.array([1.0, 1.0])}


def rollout(name: str, seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observations [T+1, 17] and rewards [T] of ``actions`` from a seeded reset."""
    env = envs.make(name)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, _, _, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
    env.close()
    return np.array(observations), np.array(rewards)


def tip_jacobian(obs: np.ndarray) -> np.ndarray:
    """d(fingertip xy)/dq of the planar arm, [2, 3], from the observed joint angles."""
    angles = np.cumsum(np.arctan2(obs[JOINT_SIN], obs[JOINT_COS]))
    lengths = np.array(LAYOUT.link_lengths)
    per_link = np.stack([-lengths * np.sin(angles), lengths * np.cos(angles)])  # link j's term
    return np.cumsum(per_link[:, ::-1], axis=1)[:, ::-1]  # joint i moves links i..2


def push_action(obs: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Scripted pusher: line the fingertip up behind the puck, then push along ``direction``."""
    d = direction / np.linalg.norm(direction)
    tip, puck = obs[TIP_POS].astype(float), obs[PUCK_POS].astype(float)
    along = (tip - puck) @ d
    sideways = np.linalg.norm(tip - puck - along * d)
    if along > 0.01 - LAYOUT.contact_distance or sideways > 0.02:
        target = puck - d * (LAYOUT.contact_distance + 0.04)  # behind the puck
    else:
        target = tip + 0.03 * d  # push at 0.6 m/s
    step = np.clip(target - tip, -0.03, 0.03)
    jac = tip_jacobian(obs)
    dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-3 * np.eye(2), step / LAYOUT.dt)
    return np.clip(dq / LAYOUT.max_joint_speed, -1.0, 1.0).astype(np.float32)


def scripted_episode(env, seed: int, axes: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Push the puck toward the goal along ``axes`` (1 = that coordinate matters); stop once there.

    Returns the puck's start and end positions and the last step's info.
    """
    obs, _ = env.reset(seed=seed)
    start = obs[PUCK_POS].copy()
    to_goal_at_start = (GOAL - start) * axes
    for _ in range(FAMILY.horizon):
        to_goal = (GOAL - obs[PUCK_POS]) * axes
        remaining = to_goal @ to_goal_at_start / np.linalg.norm(to_goal_at_start)
        action = push_action(obs, to_goal) if remaining > 0.02 else np.zeros(3, np.float32)
        obs, _, _, _, info = env.step(action)
    return start, obs[PUCK_POS].copy(), info


def test_registry_and_spaces():
    for name in PUSHER_TASKS:
        env = envs.make(name)
        assert isinstance(env.unwrapped, PusherEnv) and env.spec.max_episode_steps == FAMILY.horizon == 50
        assert env.observation_space.shape == (OBS_DIM,) and env.action_space.shape == (3,)
        env.close()
    assert envs.TASKS["push-x+push-y"].parts == ("push-x", "push-y")
    assert FAMILY.gamma == 0.95 and abs(LAYOUT.dt - 0.05) < 1e-12
    assert PusherEnv.metadata["render_fps"] == round(1 / LAYOUT.dt)


def test_tasks_share_dynamics():
    actions = np.random.default_rng(1).uniform(-1, 1, size=(50, 3)).astype(np.float32)
    reference, _ = rollout("push-x", 7, actions)
    assert np.ptp(reference[:, TIP_POS], axis=0).max() > 0.05  # the arm really moved
    for name in PUSHER_TASKS[1:]:
        other, _ = rollout(name, 7, actions)
        np.testing.assert_array_equal(reference, other)


def test_combined_reward_is_mean_of_parts_on_random_batches_and_in_steps():
    combined, push_x, push_y = (envs.TASKS[n] for n in ["push-x+push-y", "push-x", "push-y"])
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, size=(512, OBS_DIM)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(512, 3))
    expected = (push_x.reward(obs, act) + push_y.reward(obs, act)) / 2
    np.testing.assert_allclose(combined.reward(obs, act), expected, rtol=0, atol=1e-12)
    assert np.std(expected) > 0.05  # not saturated

    actions = rng.uniform(-1, 1, size=(30, 3)).astype(np.float32)
    observations, rewards = rollout("push-x+push-y", 2, actions)
    np.testing.assert_allclose(rewards, combined.reward(observations[1:], actions), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rewards, (push_x.reward(observations[1:], actions)
                                         + push_y.reward(observations[1:], actions)) / 2, rtol=1e-6, atol=1e-7)


def test_reward_terms_are_bounded_and_zero_at_the_goal():
    rng = np.random.default_rng(0)
    obs = rng.normal(scale=2.0, size=(10_000, OBS_DIM))
    for term in envs.TASKS["push-x"].reward_terms(obs, np.zeros((10_000, 3))).values():
        assert term.min() >= -1.0 and term.max() <= 0.0
    at_goal = np.zeros((1, OBS_DIM))
    at_goal[0, PUCK_POS] = GOAL
    at_goal[0, PUCK_REL] = [LAYOUT.contact_distance, 0.0]  # fingertip touching the puck
    terms = envs.TASKS["push-x"].reward_terms(at_goal, np.zeros((1, 3)))
    assert all(abs(v[0]) < 1e-9 for v in terms.values())


def test_observation_layout_matches_the_simulator():
    env = PusherEnv(envs.TASKS["push-x"])
    obs, _ = env.reset(seed=0)
    for _ in range(10):
        obs, *_ = env.step(np.array([0.5, -0.5, 0.5], np.float32))
    angles = np.arctan2(obs[JOINT_SIN], obs[JOINT_COS])
    np.testing.assert_allclose(angles, env.data.qpos[:3], atol=1e-5)
    tip = np.array([np.sum(np.array(LAYOUT.link_lengths) * f(np.cumsum(angles))) for f in (np.cos, np.sin)])
    np.testing.assert_allclose(obs[TIP_POS], tip, atol=1e-5)  # current state, not the last substep's
    np.testing.assert_allclose(obs[PUCK_REL], obs[PUCK_POS] - obs[TIP_POS], atol=1e-6)
    env.close()


def test_puck_starts_near_the_middle_and_stops_when_not_pushed():
    env = PusherEnv(envs.TASKS["push-x"])
    starts = np.array([env.reset(seed=s)[0][PUCK_POS] for s in range(20)])
    assert np.all(np.abs(starts - LAYOUT.puck_start) <= LAYOUT.puck_start_noise + 1e-6)
    assert np.ptp(starts, axis=0).min() > 0.02  # randomised
    tip_gap = np.linalg.norm(env.reset(seed=0)[0][PUCK_REL]) - LAYOUT.contact_distance
    assert tip_gap > 0.05  # the arm does not start in contact
    env.data.qvel[env._puck_qvel] = [1.0, 0.0]  # flick the puck; the arm holds still
    for _ in range(10):
        obs, *_ = env.step(np.zeros(3, np.float32))
    assert np.all(np.abs(obs[PUCK_VEL]) < 1e-6)
    assert 0.03 < obs[PUCK_POS.start] - starts[0, 0] < 0.15  # it slid, then stopped
    env.close()


@pytest.mark.parametrize("name", PUSHER_TASKS)
def test_scripted_pusher_solves_each_task(name):
    env = envs.make(name)
    for seed in range(5):
        start, end, info = scripted_episode(env, seed, AXES[name])
        before, after = np.abs((GOAL - start) * AXES[name]), np.abs((GOAL - end) * AXES[name])
        assert np.all(after[AXES[name] > 0] < LAYOUT.success_tolerance), (seed, start, end)
        assert np.all(before[AXES[name] > 0] > 2 * LAYOUT.success_tolerance)  # it had to move
        assert info["is_success"]
    env.close()


def test_goals_need_different_pushes():
    """Pushing for x leaves y unsolved and vice versa; only the combined push solves both."""
    checks = {}
    for name in PUSHER_TASKS:
        env = envs.make(name)
        checks[name] = scripted_episode(env, 0, AXES[name])[2]["checks"]
        env.close()
    assert checks["push-x"] == {"puck_at_x": True, "puck_at_y": False}
    assert checks["push-y"] == {"puck_at_x": False, "puck_at_y": True}
    assert checks["push-x+push-y"] == {"puck_at_x": True, "puck_at_y": True}


def test_random_policy_rarely_succeeds():
    env = envs.make("push-x+push-y")
    rng = np.random.default_rng(0)
    successes = []
    for seed in range(5):
        env.reset(seed=seed)
        for _ in range(FAMILY.horizon):
            _, _, _, _, info = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
        successes.append(info["is_success"])
    assert np.mean(successes) <= 0.2
    env.close()


@pytest.mark.render
def test_rgb_array_render_shows_the_scene():
    env = envs.make("push-x", render_mode="rgb_array", width=160, height=120)
    env.reset(seed=0)
    first = env.render()  # straight after reset: lit like any other frame
    env.step(np.zeros(3, np.float32))
    frame = env.render()
    env.close()
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    assert frame.std() > 10
    assert abs(float(first.mean()) - float(frame.mean())) < 3
    red = (frame[..., 0] > 150) & (frame[..., 1] < 80) & (frame[..., 2] < 80)  # the puck
    orange = (frame[..., 0] > 150) & (frame[..., 1] > 80) & (frame[..., 1] < 170) & (frame[..., 2] < 80)  # arm
    green = (frame[..., 1] > 150) & (frame[..., 0] < 120) & (frame[..., 2] < 120)  # goal line
    assert red.sum() > 10 and orange.sum() > 10 and green.sum() > 10


def test_final_puck_distances_are_reported_beside_success():
    """The pusher reports the final puck-goal distances (metres); success is the distance to the rewarded
    line(s) below the tolerance. Arm tasks define no measures."""
    from envs import pusher
    from skills.evaluation import run_episodes

    env = envs.make("push-x+push-y")
    metrics = run_episodes(env, lambda o: np.zeros(env.action_space.shape), 3)
    m = metrics["final_measures"]
    assert set(m) == {"puck_goal_distance", "puck_x_distance", "puck_y_distance"}
    assert m["puck_goal_distance"] >= max(m["puck_x_distance"], m["puck_y_distance"]) > 0
    obs = np.zeros((1, env.observation_space.shape[0]))
    offsets = pusher.puck_goal_offset(obs)
    assert pusher.puck_goal_distance(obs, None)[0] == pytest.approx(np.hypot(*offsets[0]))
    assert "final_measures" not in run_episodes(envs.make("reach"), lambda o: np.zeros(3), 1)
