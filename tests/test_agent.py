"""The SQL learner's update machinery: the per-period target-value cache and the buffer ids it relies on."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from skills.sql.learner import SoftQLearning, SQLConfig, TargetValueCache
from skills.training.buffer import ReplayBuffer


def filled_buffer(n: int, capacity: int | None = None, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(4, 2, capacity or n)
    for _ in range(n):
        buffer.add(rng.normal(size=4), rng.uniform(-1, 1, 2), rng.normal(), rng.normal(size=4), False)
    return buffer


def test_buffer_ids_count_insertions_and_survive_ring_wrap():
    buffer = filled_buffer(7, capacity=5)
    assert buffer.ids.tolist() == [5, 6, 2, 3, 4]  # slots 0 and 1 were overwritten by transitions 5 and 6
    batch = buffer.sample(32, np.random.default_rng(0))
    assert torch.equal(batch["id"], torch.from_numpy(buffer.ids)[batch["index"]])
    assert torch.equal(batch["obs"], torch.from_numpy(buffer.obs)[batch["index"]])


def test_cache_computes_each_transition_once_per_period():
    cache = TargetValueCache(torch.device("cpu"))
    calls = []

    def compute(miss):
        calls.append(int(miss.sum()))
        return torch.arange(int(miss.sum()), dtype=torch.float32) + 10.0 * len(calls)

    index, ids = torch.tensor([3, 0, 3, 7]), torch.tensor([3, 0, 3, 7])
    first = cache.lookup(0, index, ids, compute)
    assert first[0] == first[2]  # a slot drawn twice in one batch gets one value
    again = cache.lookup(0, index, ids, compute)
    assert torch.equal(first, again) and calls == [4]  # all hits: no new computation
    # a new transition written into slot 3 (id 11) is a miss, the others still hit
    partly = cache.lookup(0, index, torch.tensor([11, 0, 11, 7]), compute)
    assert calls == [4, 2] and partly[1] == first[1] and partly[3] == first[3] and partly[0] != first[0]
    # the next target period invalidates everything
    cache.lookup(1, index, ids, compute)
    assert calls == [4, 2, 4]


def test_agent_values_targets_once_per_target_period_and_matches_the_uncached_estimate():
    config = SQLConfig(hidden=(16, 16), batch_size=8, target_update_interval=3, value_samples=4)
    buffer = filled_buffer(6)
    agent = SoftQLearning(4, 2, config)
    index = np.arange(6)  # distinct slots: a slot drawn twice would share one value
    batch = {k: torch.from_numpy(getattr(buffer, k)[index]) for k in ("obs", "action", "reward", "next_obs", "terminated")}
    batch |= {"index": torch.from_numpy(index), "id": torch.from_numpy(buffer.ids[index])}
    # same importance samples -> the cached value equals the uncached estimate exactly
    torch.manual_seed(5)
    uncached = agent.target_soft_value(batch["next_obs"])
    torch.manual_seed(5)
    assert torch.allclose(agent.next_state_value(batch), uncached)

    computed = []
    original = agent.target_soft_value
    agent.target_soft_value = lambda next_obs: computed.append(len(next_obs)) or original(next_obs)
    for _ in range(3):  # updates 0, 1, 2 share the target network of period 0
        agent.update(batch)
    assert computed == []  # already cached by the lookup above
    agent.update(batch)  # update 3: the target was copied after update 2, so values are recomputed
    assert computed == [len(batch["obs"])]


def test_cache_can_be_switched_off_and_old_manifests_load_without_it():
    assert SQLConfig().cache_target_values
    legacy = SQLConfig().to_dict()
    del legacy["cache_target_values"]
    assert not SQLConfig.from_dict(legacy).cache_target_values  # how skills saved before the cache trained
    agent = SoftQLearning(4, 2, replace(SQLConfig(hidden=(8,)), cache_target_values=False))
    batch = filled_buffer(5).sample(4, np.random.default_rng(0))
    calls = []
    original = agent.target_soft_value
    agent.target_soft_value = lambda next_obs: calls.append(1) or original(next_obs)
    agent.next_state_value(batch)
    agent.next_state_value(batch)
    assert len(calls) == 2


@pytest.mark.parametrize("cache", [True, False])
def test_update_is_bitwise_reproducible(cache, device):
    buffer = filled_buffer(50)

    def weights():
        torch.manual_seed(0)
        agent = SoftQLearning(4, 2, SQLConfig(hidden=(16, 16), cache_target_values=cache, target_update_interval=4),
                              device=device)
        rng = np.random.default_rng(0)
        for _ in range(10):
            agent.update(buffer.sample(16, rng, device))
        return torch.cat([p.flatten() for p in agent.q.parameters()] + [p.flatten() for p in agent.sampler.parameters()])

    assert torch.equal(weights(), weights())


def test_unusable_device_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="unknown torch device 'gpu'"):
        SoftQLearning(4, 2, SQLConfig(hidden=(8,)), device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            SoftQLearning(4, 2, SQLConfig(hidden=(8,)), device="cuda")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            SoftQLearning(4, 2, SQLConfig(hidden=(8,)), device=f"cuda:{torch.cuda.device_count()}")


def test_last_of_each_picks_the_last_occurrence_of_every_key():
    from skills.sql.learner import last_of_each

    keys = torch.tensor([3, 1, 3, 2, 1])
    assert last_of_each(keys).tolist() == [4, 3, 2]  # keys 1, 2, 3
    assert last_of_each(torch.tensor([7])).tolist() == [0]


# ---- the soft value target projected onto its analytic interval (clip_target_value) ----
def test_projected_soft_value_iteration_keeps_the_fixed_point_and_clipping_is_active():
    """On a random tabular MDP (n actions, so the entropy bonus is alpha log n), soft value iteration with the target
    projected onto [(r_min + alpha log n)/(1 - gamma), (r_max + alpha log n)/(1 - gamma)] reaches the unprojected fixed
    point, from a start far above the ceiling where the projection acts. A bound that cut into V* would move it."""
    from skills.sql.equations import project_soft_value

    rng = np.random.default_rng(0)
    states, actions, alpha, gamma = 6, 3, 0.5, 0.9
    reward = torch.tensor(rng.uniform(-1.0, 0.0, (states, actions)))
    nxt = torch.tensor(rng.integers(0, states, (states, actions)))
    bonus = alpha * np.log(actions)
    low, high = (-1.0 + bonus) / (1 - gamma), (0.0 + bonus) / (1 - gamma)

    def iterate(clip: bool) -> tuple[torch.Tensor, int]:
        v, clipped = torch.full((states,), 50.0, dtype=torch.float64), 0
        for _ in range(400):
            target = project_soft_value(v, low, high) if clip else v
            clipped += int((target != v).sum())
            q = reward + gamma * target[nxt]
            v = alpha * torch.logsumexp(q / alpha, dim=1)
        return v, clipped

    exact, _ = iterate(False)
    projected, clipped = iterate(True)
    assert clipped > 0  # the projection did act
    assert torch.allclose(projected, exact, atol=1e-9)
    assert bool(((exact >= low) & (exact <= high)).all())


def test_clipped_targets_enter_the_loss_and_need_the_value_range():
    config = SQLConfig(hidden=(8,), batch_size=8, clip_target_value=True)
    batch = filled_buffer(8).sample(8, np.random.default_rng(0))
    agent = SoftQLearning(4, 2, config)
    agent.next_state_value = lambda b: torch.full((len(b["reward"]),), 100.0)  # far past any ceiling
    with pytest.raises(ValueError, match="no value_range"):
        agent.q_loss_and_gradients(batch)
    agent.value_range = (-3.0, 1.5)
    loss, _ = agent.q_loss_and_gradients(batch)
    q = agent.q(batch["obs"], batch["action"])
    expected = 0.5 * (batch["reward"] + config.gamma * (1 - batch["terminated"]) * 1.5 - q).pow(2).mean()
    assert torch.allclose(loss, expected)
    plain = SoftQLearning(4, 2, replace(config, clip_target_value=False))
    plain.q.load_state_dict(agent.q.state_dict())
    plain.next_state_value = agent.next_state_value
    unclipped, _ = plain.q_loss_and_gradients(batch)
    assert float(unclipped) > 10 * float(loss)  # without the projection the 100s reach the loss
    with pytest.raises(ValueError, match="clip_target_value=1 \\(true or false\\)"):
        SQLConfig(clip_target_value=1)
    legacy = SQLConfig().to_dict()
    del legacy["clip_target_value"]
    assert not SQLConfig.from_dict(legacy).clip_target_value  # skills saved before it trained without it
