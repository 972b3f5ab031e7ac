"""dm_control's Kinova Jaco (6 velocity-servoed joints) with its three-finger hand, as a built-in custom arm.

``envs.make("reach", arm="jaco", workspace_origin="auto")``: the end effector is the hand's pinch site
(between the fingertips), ``arm/jaco_hand/pinchsite``. The model ships with dm_control (a dependency); nothing
is downloaded. Its joints are velocity servos limited to 0.63 rad/s (shoulder, elbow) and 0.84 rad/s (wrist),
so it moves the end effector more slowly than the task's 5 cm per step at full action (docs/envs.md).
"""

from __future__ import annotations

EE_SITE = "jaco_hand/pinchsite"


def jaco_with_hand():
    """A fresh ``mjcf.RootElement`` of the Jaco arm with its hand attached (dm_control.entities.manipulators.kinova)."""
    from dm_control.entities.manipulators import kinova

    arm = kinova.JacoArm()
    arm.attach(kinova.JacoHand())
    return arm.mjcf_model
