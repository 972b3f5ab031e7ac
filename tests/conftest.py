"""Shared fixtures: ``device`` (a test that takes it runs on the CPU and, where torch sees one, on CUDA), ``tiny``
(a complete tiny multigoal skill, obs 2 and actions 2, to copy from) and ``two_goal_library`` (a copy of the shipped
``west``, ``east`` and ``west+east`` skills)."""

from pathlib import Path

import pytest
import torch

import envs  # noqa: F401  # before any test module imports mujoco (dm_control): envs picks the headless GL backend

CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="torch sees no CUDA device")])


@pytest.fixture(autouse=True)
def no_inherited_library(monkeypatch):
    """Tests read the shipped library (or the one they name): a ``COMPOSABLE_SKILLS_LIBRARY`` the developer's shell
    exports is not theirs, in this process or in the ones it starts."""
    monkeypatch.delenv("COMPOSABLE_SKILLS_LIBRARY", raising=False)


@pytest.fixture(params=["cpu", CUDA])
def device(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from test_skills import train_tiny

    return train_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def two_goal_library(tmp_path) -> Path:
    from library_helpers import shipped_library

    return shipped_library(tmp_path / "lib", ("west", "east", "west+east"))
