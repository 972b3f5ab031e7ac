"""Uniform replay buffer over flat numpy arrays."""

from __future__ import annotations

import numpy as np
import torch

FIELDS = ("obs", "action", "reward", "next_obs", "terminated")


class ReplayBuffer:
    """Ring buffer of transitions ``(s, a, r, s', terminated)``; float32 storage."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.action = np.zeros((self.capacity, act_dim), np.float32)
        self.reward = np.zeros(self.capacity, np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.terminated = np.zeros(self.capacity, np.float32)
        self.ids = np.full(self.capacity, -1, np.int64)  # insertion count of each slot's transition
        self.size = 0
        self.added = 0
        self._next = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        i = self._next
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, float(terminated)
        self.ids[i] = self.added
        self.added += 1
        self._next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def add_many(self, data: dict[str, np.ndarray]) -> None:
        """Append a dict of arrays with the ``FIELDS`` keys (e.g. a stored transition sample)."""
        for j in range(len(data["obs"])):
            self.add(*(data[k][j] for k in FIELDS))

    def sample(self, batch_size: int, rng: np.random.Generator, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """A uniform minibatch: float32 tensors keyed by ``FIELDS``, plus int64 ``index`` (slot)
        and ``id`` (which transition: slots are reused once the ring wraps), which let the agent
        cache per-transition quantities."""
        idx = rng.integers(0, self.size, size=batch_size)
        batch = {k: torch.from_numpy(getattr(self, k)[idx]).to(device) for k in FIELDS}
        batch["index"] = torch.from_numpy(idx).to(device)
        batch["id"] = torch.from_numpy(self.ids[idx]).to(device)
        return batch

    def subsample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Up to ``n`` distinct stored transitions (numpy), e.g. to ship with a skill."""
        idx = np.sort(rng.choice(self.size, size=min(n, self.size), replace=False))
        return {k: getattr(self, k)[idx].copy() for k in FIELDS}
