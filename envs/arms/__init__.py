"""Arm backends for the arm task family (``envs.arm``): the Fetch robot and any MJCF arm.

``base``: the contract (``Arm``) and what every backend shares; ``fetch``: gymnasium-robotics' Fetch;
``custom``: a user's MJCF arm driven by Cartesian IK; ``actuation``: how a custom arm's joints are
driven (position servos, velocity servos or torque motors).
"""

from __future__ import annotations

from typing import Any

from .base import Arm

BUILTIN = ("fetch", "jaco")  # arms known by name; anything else is an MJCF path, element or builder


def make_arm(arm: Any, ee_site: str | None, width: int, height: int, **kwargs: Any) -> Arm:
    """``None``/``"fetch"`` gives the Fetch robot; ``"jaco"`` dm_control's Kinova Jaco with its hand
    (``envs.arms.jaco``); an MJCF path, element or a function building one gives a custom arm."""
    if arm is None or (isinstance(arm, str) and arm == "fetch"):
        if ee_site is not None:
            raise ValueError("ee_site applies to custom arms only; Fetch uses 'robot0:grip'")
        from .fetch import FetchArm

        return FetchArm(width=width, height=height, **kwargs)
    from .custom import CustomArm

    if isinstance(arm, str) and arm == "jaco":
        from . import jaco

        return CustomArm(jaco.jaco_with_hand, ee_site=ee_site or jaco.EE_SITE, width=width, height=height, **kwargs)
    if ee_site is None:
        raise ValueError("a custom arm needs ee_site='<name of the end-effector site>'")
    return CustomArm(arm, ee_site=ee_site, width=width, height=height, **kwargs)
