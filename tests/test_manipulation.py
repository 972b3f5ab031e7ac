"""The Fetch manipulation families (envs.manipulation): physics of the grasp and the obstacle, reward algebra,
layout sampling, reproducibility, and scripted controllers that reach success. No learning here."""

import subprocess
import sys

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
import envs.manipulation as manipulation
from envs.manipulation import (
    BLOCK_REL,
    BLOCK_VEL,
    BLOCK_XAXIS,
    BLOCK_ZAXIS,
    GRIP_POS,
    HAND_CONTACT,
    OBSTACLE_REL_BLOCK,
    OBSTACLE_REL_GRIP,
    P_GRIP_POS,
    PLACE,
    PLACE_FAMILY,
    PLACE_OBS_DIM,
    PUCK,
    PUCK_AXIS,
    PUCK_FAMILY,
    PUCK_GOAL,
    PUCK_OBS_DIM,
    PUCK_POS,
    PUCK_REL,
    TARGET_REL,
    WORKSPACE_ORIGIN,
    FetchPlaceEnv,
    FetchPuckEnv,
    GraspError,
    obstacle_gap,
    sample_place_scene,
)

PLACE_TASKS = ["place", "clear", "place+clear"]
PUCK_TASKS = ["puck-x", "puck-y", "puck-x+puck-y"]
FAR_OBSTACLE = {"obstacle": [0.15, 0.27]}  # a corner of the table, away from everything below


def rollout(name: str, seed: int, actions: np.ndarray, options: dict | None = None):
    """Observations [T+1, o], rewards [T] and infos of ``actions`` from a seeded reset."""
    env = envs.make(name)
    obs, _ = env.reset(seed=seed, options=options)
    observations, rewards, infos = [obs], [], []
    for action in actions:
        obs, reward, _, _, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
    env.close()
    return np.array(observations), np.array(rewards), infos


def carry_action(obs: np.ndarray, over: bool) -> np.ndarray:
    """Scripted carry: straight at the target (``over``: first up to 20 cm, across, then down), then press it down."""
    block = obs[GRIP_POS] + obs[BLOCK_REL]
    target = block + obs[TARGET_REL]
    if np.linalg.norm(target[:2] - block[:2]) > 0.01:
        if over and block[2] < 0.19 and np.linalg.norm(target[:2] - block[:2]) > 0.05:
            goal = np.array([block[0], block[1], 0.20])
        else:
            goal = np.array([target[0], target[1], block[2] if over else target[2] + 0.02])
    else:
        goal = target - np.array([0.0, 0.0, 0.01])
    return np.clip((goal - block) / 0.05, -1.0, 1.0).astype(np.float32)


# ---- registry, spaces, the env checker ---------------------------------------------------------------
@pytest.mark.parametrize("name", PLACE_TASKS + PUCK_TASKS)
def test_registered_and_passes_gymnasium_checker(name):
    env = envs.make(name)
    assert env.spec.max_episode_steps == 50
    expected = (FetchPlaceEnv, PLACE_OBS_DIM) if name in PLACE_TASKS else (FetchPuckEnv, PUCK_OBS_DIM)
    assert isinstance(env.unwrapped, expected[0]) and env.observation_space.shape == (expected[1],)
    assert env.action_space.shape == (3,)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_families_and_combined_tasks():
    assert envs.TASKS["place+clear"].parts == ("place", "clear")
    assert envs.TASKS["puck-x+puck-y"].parts == ("puck-x", "puck-y")
    assert {envs.TASKS[n].family.name for n in PLACE_TASKS} == {"fetch-place"}
    assert {envs.TASKS[n].family.name for n in PUCK_TASKS} == {"fetch-puck"}
    assert envs.TASKS["place+clear"].success == ("placed", "no_collision")
    # the tasks of a family differ only in their weights; the puck shaping term has one weight everywhere
    assert {envs.TASKS[n].weights["grip_to_puck"] for n in PUCK_TASKS} == {0.5}
    listing = subprocess.run([sys.executable, "-m", "envs"], capture_output=True, text=True, check=True).stdout
    for name in PLACE_TASKS + PUCK_TASKS:
        assert any(line.split()[0] == name for line in listing.splitlines())


def test_custom_arms_are_refused():
    with pytest.raises(ValueError, match="runs on Fetch only: it needs Fetch's two-finger gripper"):
        envs.make("place", arm="examples/arm/three_link_arm.xml", ee_site="ee")
    with pytest.raises(ValueError, match="'puck-x' \\(family 'fetch-puck'\\) runs on Fetch only"):
        FetchPuckEnv(envs.TASKS["puck-x"], arm="jaco")
    with pytest.raises(TypeError, match="unexpected keyword arguments for task 'clear': colour"):
        FetchPlaceEnv(envs.TASKS["clear"], colour="red")


def test_importing_skills_sql_stays_free_of_mujoco():
    code = "import skills.sql, envs, sys; assert 'mujoco' not in sys.modules, 'mujoco imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- the grasp ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["uniform", "bang-bang"])
def test_grasp_holds_through_50_full_speed_random_steps(kind):
    env = FetchPlaceEnv(envs.TASKS["place"])
    for seed in range(4):
        env.reset(seed=seed, options={"block_start": [-0.05, -0.15, 0.15], "target": [-0.05, 0.15], **FAR_OBSTACLE})
        rng = np.random.default_rng(seed)
        for _ in range(50):
            action = rng.uniform(-1, 1, 3) if kind == "uniform" else np.sign(rng.uniform(-1, 1, 3))
            _, _, _, _, info = env.step(action.astype(np.float32))
            assert not info["collision"]
            env.check_grasp("during the test")  # gap ~ block width, centred within 1 cm, tilt < 10 deg
            state = env.grasp_state()
            assert abs(state["finger_gap"] - 0.05) < 0.003
            # the pads (2.7 cm wide) stay on the block's faces (5 cm): its offset along them is small
            assert np.max(np.abs(state["block_offset"])) < 0.01
    env.close()


def test_grasp_is_checked_at_reset_and_a_bad_one_raises(monkeypatch):
    env = FetchPlaceEnv(envs.TASKS["place"])
    _, info = env.reset(seed=0)
    # the 24 kN squeeze presses the pads about 2 mm into the block (soft contact)
    assert abs(info["grasp"]["finger_gap"] - 0.05) < 0.003 and np.max(np.abs(info["grasp"]["block_offset"])) < 0.002
    block = env.sim.data.xpos[env._block] - WORKSPACE_ORIGIN
    grip = env.sim.grip_position()
    assert np.linalg.norm(block - grip) < 0.002  # the block sits at the grip site, between the fingers

    def hold_open(substeps):  # a broken gripper: the fingers open while the grasp settles, and the block falls
        import mujoco

        env.sim.data.ctrl[env.sim._finger_actuators] = 0.05
        mujoco.mj_step(env.sim.model, env.sim.data, nstep=substeps)
        mujoco.mj_forward(env.sim.model, env.sim.data)

    monkeypatch.setattr(env.sim, "hold", hold_open)
    with pytest.raises(GraspError, match="block slipped out of the grasp at reset: finger gap .* block offset"):
        env.reset(seed=0)
    env.close()


# ---- the obstacle ------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction,start,obstacle", [
    ([1.0, 0.0, 0.0], [-0.15, 0.0, 0.06], [0.0, 0.0]),  # sideways at block height: the gripper body's edge first
    ([0.0, 1.0, 0.0], [-0.05, -0.15, 0.06], [-0.05, 0.0]),  # fingers first
    ([0.0, 0.0, -1.0], [-0.05, 0.0, 0.25], [-0.05, 0.0]),  # down onto its top: the block first
])
def test_moving_into_the_obstacle_makes_contact_without_interpenetration(direction, start, obstacle):
    env = FetchPlaceEnv(envs.TASKS["place+clear"])
    obs, _ = env.reset(seed=0, options={"block_start": start, "target": [-0.05, 0.2], "obstacle": obstacle})
    assert not obs[HAND_CONTACT:].any()
    hits, deepest, gap_before_contact = [], 0.0, None
    for _ in range(12):
        gap = float(obstacle_gap(obs[None].astype(np.float64))[0])
        obs, _, _, _, info = env.step(np.array(direction, np.float32))
        data = env.sim.data
        for k in range(data.ncon):
            if env.sim.obstacle_geom in data.contact.geom[k]:
                deepest = min(deepest, float(data.contact.dist[k]))
        if info["collision"] and gap_before_contact is None:
            gap_before_contact = gap
            assert info["reward_terms"]["clear"] == -1.0 and not info["checks"]["no_collision"]
            assert float(obstacle_gap(obs[None].astype(np.float64))[0]) < 0.003  # the proxies touch too
        hits.append(info["collision"])
    assert any(hits) and hits[-1]  # it touches, and stays in contact while pushing
    assert gap_before_contact is not None and gap_before_contact > 0.0  # the proxy gap was open before contact
    assert deepest > -0.003, f"interpenetration {deepest * 1000:.1f} mm"
    env.close()


def test_the_obstacle_collides_wherever_a_reset_puts_it():
    env = FetchPlaceEnv(envs.TASKS["place"])
    for obstacle in ([-0.15, -0.05], [0.05, 0.08], [-0.05, 0.0], [0.08, -0.05]):
        obs, info = env.reset(seed=0, options={"block_start": [obstacle[0], obstacle[1] + 0.12, 0.08],
                                               "target": [obstacle[0], obstacle[1] - 0.15], "obstacle": obstacle})
        assert not info["forced_layout_rejected"]
        hit = False
        for _ in range(8):
            obs, _, _, _, step = env.step(np.array([0.0, -1.0, 0.0], np.float32))
            hit |= step["collision"]
        assert hit and obs[GRIP_POS][1] > obstacle[1], obstacle  # stopped by it, not through it
    env.close()


def test_obstacle_is_a_fixed_wall():
    env = FetchPlaceEnv(envs.TASKS["place"])
    env.reset(seed=0, options={"block_start": [-0.15, 0.0, 0.06], "target": [-0.05, 0.2], "obstacle": [0.0, 0.0]})
    before = env.sim.data.geom_xpos[env.sim.obstacle_geom].copy()
    for _ in range(10):
        env.step(np.array([1.0, 0.0, 0.0], np.float32))
    np.testing.assert_allclose(env.sim.data.geom_xpos[env.sim.obstacle_geom], before, atol=1e-12)
    np.testing.assert_allclose(before, WORKSPACE_ORIGIN + [0.0, 0.0, PLACE.obstacle_height / 2], atol=1e-12)
    assert env.sim.grip_position()[0] < -PLACE.obstacle_radius + 0.02  # the hand stopped at the wall
    env.close()


# ---- observations and rewards ------------------------------------------------------------------------
def test_observation_layout_matches_the_simulator():
    env = FetchPlaceEnv(envs.TASKS["place"])
    obs, info = env.reset(seed=3)
    for _ in range(5):
        obs, *_ = env.step(np.array([0.3, -0.2, 0.1], np.float32))
    data = env.sim.data
    block = data.xpos[env._block] - WORKSPACE_ORIGIN
    rotation = data.xmat[env._block].reshape(3, 3)
    np.testing.assert_allclose(obs[GRIP_POS], data.site_xpos[env.sim._grip] - WORKSPACE_ORIGIN, atol=1e-6)
    np.testing.assert_allclose(obs[BLOCK_REL], block - obs[GRIP_POS], atol=1e-6)
    np.testing.assert_allclose(obs[BLOCK_ZAXIS], rotation[:, 2], atol=1e-6)
    np.testing.assert_allclose(obs[BLOCK_XAXIS], rotation[:, 0], atol=1e-6)
    np.testing.assert_allclose(obs[TARGET_REL], [*info["target"], PLACE.block_half] - block, atol=1e-6)
    obstacle = np.array([*info["obstacle"], PLACE.obstacle_height / 2])
    np.testing.assert_allclose(obs[OBSTACLE_REL_GRIP], obstacle - obs[GRIP_POS], atol=1e-6)
    np.testing.assert_allclose(obs[OBSTACLE_REL_BLOCK], obstacle - block, atol=1e-6)
    np.testing.assert_allclose(obs[BLOCK_VEL], data.qvel[env._block_qvel:env._block_qvel + 3], atol=1e-6)
    env.close()


@pytest.mark.parametrize("family_tasks", [PLACE_TASKS, PUCK_TASKS])
def test_rewards_from_observations_equal_the_env_rewards_and_combined_is_the_mean(family_tasks):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(40, 3)).astype(np.float32)
    combined = envs.TASKS[family_tasks[2]]
    parts = [envs.TASKS[n] for n in family_tasks[:2]]
    reference = None
    for name in family_tasks:
        observations, rewards, infos = rollout(name, 5, actions)
        task = envs.TASKS[name]
        np.testing.assert_allclose(rewards, task.reward(observations[1:], actions), rtol=1e-6, atol=1e-7)
        for k, term in task.reward_terms(observations[1:], actions).items():
            np.testing.assert_allclose(term, [i["reward_terms"][k] for i in infos], rtol=1e-6, atol=1e-7)
        if reference is None:
            reference = observations
        np.testing.assert_array_equal(observations, reference)  # one MDP: the tasks share the dynamics
    mean = (parts[0].reward(reference[1:], actions) + parts[1].reward(reference[1:], actions)) / 2
    np.testing.assert_allclose(combined.reward(reference[1:], actions), mean, rtol=0, atol=1e-12)
    rng = np.random.default_rng(1)
    batch = rng.normal(scale=0.2, size=(1000, reference.shape[1]))
    act = rng.uniform(-1, 1, size=(1000, 3))
    np.testing.assert_allclose(combined.reward(batch, act),
                               (parts[0].reward(batch, act) + parts[1].reward(batch, act)) / 2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", [PLACE_FAMILY, PUCK_FAMILY])
def test_terms_stay_in_their_ranges(family):
    names = PLACE_TASKS if family is PLACE_FAMILY else PUCK_TASKS
    rng = np.random.default_rng(0)
    seen = []
    for seed in range(3):
        observations, _, _ = rollout(names[0], seed, rng.uniform(-1, 1, size=(50, 3)).astype(np.float32))
        seen.append(observations)
    batches = [np.concatenate(seen), rng.normal(scale=0.5, size=(5000, seen[0].shape[1]))]
    if family is PLACE_FAMILY:
        batches[1][:, HAND_CONTACT:] = rng.integers(0, 2, size=(5000, 2))
    for batch in batches:
        for name, fn in family.terms.items():
            low, high = family.term_ranges[name]
            values = fn(batch, np.zeros((len(batch), 3)))
            assert values.shape == (len(batch),) and np.all(values >= low) and np.all(values <= high), name
    moving = "place" if family is PLACE_FAMILY else "grip_to_puck"  # the term random actions always change
    assert np.ptp(family.terms[moving](batches[0], None)) > 0.05  # the rollouts are not all saturated


def test_place_and_clear_terms_at_their_extremes():
    at_target = np.zeros((1, PLACE_OBS_DIM))
    at_target[0, BLOCK_ZAXIS], at_target[0, BLOCK_XAXIS] = (0, 0, 1), (1, 0, 0)
    at_target[0, OBSTACLE_REL_GRIP] = at_target[0, OBSTACLE_REL_BLOCK] = (0.3, 0.0, 0.0)
    assert abs(manipulation.place_term(at_target, None)[0]) < 1e-12
    assert manipulation.clear_term(at_target, None)[0] == 0.0  # far from the obstacle
    touching = at_target.copy()
    touching[0, HAND_CONTACT] = 1.0
    assert manipulation.clear_term(touching, None)[0] == -1.0
    near = at_target.copy()  # gripper body (4 cm half-width in x) 2.5 cm from the cylinder, the rest farther: half the ramp
    near[0, OBSTACLE_REL_BLOCK] = (PLACE.obstacle_radius + PLACE.gripper_half[0] + 0.025, 0.0, 0.0)
    near[0, OBSTACLE_REL_GRIP] = near[0, OBSTACLE_REL_BLOCK]
    assert abs(manipulation.clear_term(near, None)[0] + 0.5) < 1e-9


# ---- layouts -----------------------------------------------------------------------------------------
def test_resamples_are_counted_and_a_bad_forced_layout_is_redrawn():
    env = FetchPlaceEnv(envs.TASKS["place"])
    totals = []
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert set(info["resamples"]) == {"out_of_reach", "in_obstacle", "obstacle_off_table", "too_close",
                                          "obstacle_on_path"}
        assert info["resampled"] == sum(info["resamples"].values())
        totals.append(info["resampled"])
    assert max(totals) > 0  # the sampling region is larger than the reach region: draws are rejected, and counted
    # a target inside the obstacle
    _, info = env.reset(seed=0, options={"block_start": [-0.1, -0.15, 0.12], "target": [-0.05, 0.1], "obstacle": [-0.05, 0.1]})
    assert info["forced_layout_rejected"] and info["resamples"]["in_obstacle"] >= 1
    assert np.linalg.norm(info["target"] - [-0.05, 0.1]) > 1e-6
    # a start out of reach (far side of the table)
    _, info = env.reset(seed=0, options={"block_start": [0.16, 0.0, 0.12], "target": [-0.05, 0.1], **FAR_OBSTACLE})
    assert info["forced_layout_rejected"] and info["resamples"]["out_of_reach"] >= 1
    # a valid forced layout is taken as given
    _, info = env.reset(seed=0, options={"block_start": [-0.1, -0.15, 0.12], "target": [-0.05, 0.1], **FAR_OBSTACLE})
    assert not info["forced_layout_rejected"] and info["resampled"] == 0
    np.testing.assert_allclose(info["block_start"], [-0.1, -0.15, 0.12])
    np.testing.assert_allclose(env.sim.grip_position(), [-0.1, -0.15, 0.12], atol=0.003)
    env.close()


def test_every_sampled_layout_is_valid_and_half_of_them_block_the_path():
    rng = np.random.default_rng(0)
    blocking = []
    for _ in range(400):
        scene = sample_place_scene(rng)
        for point in (scene.start, scene.target):
            assert np.all(point[:2] >= PLACE.reach_low) and np.all(point[:2] <= PLACE.reach_high)
        assert np.linalg.norm(scene.target - scene.start[:2]) >= PLACE.min_distance
        assert manipulation.layout_gap(scene.start, scene.obstacle) >= PLACE.layout_clearance
        assert manipulation.layout_gap(np.array([*scene.target, PLACE.block_half]), scene.obstacle) >= PLACE.layout_clearance
        on_path = manipulation._segment_distance_xy(scene.obstacle, scene.start, scene.target)
        assert on_path <= PLACE.blocking_offset + 1e-9 if scene.blocking else on_path >= PLACE.clearance
        assert PLACE.start_height[0] <= scene.start[2] <= PLACE.start_height[1]
        blocking.append(scene.blocking)
    assert 0.4 < np.mean(blocking) < 0.6


@pytest.mark.parametrize("name", ["place+clear", "puck-x+puck-y"])
def test_seeded_resets_are_reproducible(name):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(20, 3)).astype(np.float32)
    first, _, _ = rollout(name, 3, actions)
    second, _, _ = rollout(name, 3, actions)
    other, _, _ = rollout(name, 4, actions)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first[0], other[0])


# ---- success is reachable ----------------------------------------------------------------------------
def test_straight_carry_places_the_block_on_unblocked_episodes_and_hits_blocking_obstacles():
    env = envs.make("place+clear")
    placed = blocked_hits = blocked = 0
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        collided = False
        for _ in range(50):
            obs, _, _, _, step = env.step(carry_action(obs, over=False))
            collided |= step["collision"]
        if info["obstacle_blocks_path"]:
            blocked += 1
            blocked_hits += collided
        else:
            placed += step["checks"]["placed"] and step["is_success"]
            assert step["measures"]["block_target_distance"] < PLACE.success_xy
    assert placed == 12 - blocked and blocked >= 3
    assert blocked_hits == blocked  # low and straight runs into an obstacle on the path
    env.close()


def test_carrying_over_the_obstacle_succeeds_on_every_episode():
    env = envs.make("place+clear")
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        for _ in range(50):
            obs, _, _, _, info = env.step(carry_action(obs, over=True))
        assert info["is_success"], (seed, info["block_target_xy"], info["block_height"])
    env.close()


def push_action(obs: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Scripted pusher: lift over the puck to a point behind it, lower the gripper there, push along ``direction``."""
    d = direction / np.linalg.norm(direction)
    grip, puck = obs[P_GRIP_POS].astype(float), obs[PUCK_POS].astype(float)
    behind = puck[:2] - d * (PUCK.contact_distance + 0.02)
    if np.linalg.norm(grip[:2] - behind) > 0.015 and (grip[:2] - puck[:2]) @ d > -(PUCK.contact_distance + 0.005):
        target = np.append(behind, 0.09) if grip[2] > 0.075 else np.append(grip[:2], 0.09)  # up, then across
    elif np.linalg.norm(grip[:2] - behind) > 0.015 and grip[2] > 0.04:
        target = np.append(behind, 0.09)
    elif grip[2] > 0.035:
        target = np.append(grip[:2], 0.03)  # down behind the puck
    else:
        target = np.append(grip[:2] + 0.03 * d, 0.03)  # push at 0.75 m/s
    return np.clip((target - grip) / 0.05, -1, 1).astype(np.float32)


@pytest.mark.parametrize("name,axes", [("puck-x", (1.0, 0.0)), ("puck-y", (0.0, 1.0)), ("puck-x+puck-y", (1.0, 1.0))])
def test_scripted_push_reaches_the_rewarded_lines_and_the_puck_stays_flat(name, axes):
    axes = np.array(axes)
    env = envs.make(name)
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        start = obs[PUCK_POS][:2].copy()
        assert np.linalg.norm(obs[PUCK_REL]) > PUCK.contact_distance + 0.01  # not in contact at the start
        for _ in range(50):
            to_goal = (PUCK_GOAL - obs[PUCK_POS][:2]) * axes
            remaining = to_goal @ ((PUCK_GOAL - start) * axes) / np.linalg.norm((PUCK_GOAL - start) * axes)
            obs, _, _, _, info = env.step(push_action(obs, to_goal) if remaining > 0.02 else np.zeros(3, np.float32))
            assert obs[PUCK_AXIS][2] > np.cos(np.radians(30))  # a free puck: tilted at most briefly, never over
        assert info["is_success"] and obs[PUCK_AXIS][2] > np.cos(np.radians(3))  # and it ends flat
        checks = info["checks"]  # pushing along one axis leaves the puck far from the other line
        if axes[0] == 0:
            assert not checks["puck_at_x"] and info["measures"]["puck_x_distance"] > 0.1
        if axes[1] == 0:
            assert not checks["puck_at_y"] and info["measures"]["puck_y_distance"] > 0.1
    env.close()


def test_puck_stops_once_let_go():
    env = FetchPuckEnv(envs.TASKS["puck-x"])
    env.reset(seed=0)
    env.sim.data.qvel[env._puck_qvel:env._puck_qvel + 3] = [1.0, 0.0, 0.0]
    for _ in range(10):
        obs, *_ = env.step(np.zeros(3, np.float32))
    assert np.linalg.norm(obs[manipulation.PUCK_VEL]) < 1e-3
    env.close()
