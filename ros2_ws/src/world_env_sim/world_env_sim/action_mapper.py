"""ROS-free core of the action-map node: joint positions -> the pose-marker image."""

from __future__ import annotations

import numpy as np

from world_env_common.action_map import render_action_map, render_arm_map
from world_env_common.pose import axis_angle_to_matrix
from world_env_common.rig import Rig
from world_env_common.robot import DEFAULT_FINGER_JOINT_NAMES, DEFAULT_JOINT_NAMES, PandaModel


class ActionMapper:
    """Renders the end-effector pose of given joint positions as the world model's action map.

    Args:
        rig: camera model and robot base placement.
        joint_names, finger_joint_names: the names joint states use for the arm and fingers.
        arm: draw the arm's kinematic chain under the markers (a world model with ``arm_map``).
    """

    def __init__(self, rig: Rig, joint_names=DEFAULT_JOINT_NAMES, finger_joint_names=DEFAULT_FINGER_JOINT_NAMES,
                 arm: bool = False):
        self.rig, self.arm = rig, arm
        self.robot = PandaModel(rig.base_position, rig.base_quat_wxyz, joint_names, finger_joint_names)

    def state(self, q: np.ndarray, finger_qpos: np.ndarray) -> np.ndarray:
        """(7,) policy state [x, y, z, rx, ry, rz, gripper width] of the joint positions."""
        return self.robot.state_from_joints(q, finger_qpos)

    def render(self, q: np.ndarray, finger_qpos: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 action map of joint positions: the markers of their state, and with
        ``arm`` the arm's chain at those joints, as the world simulator draws it."""
        state = self.state(q, finger_qpos)
        if not self.arm:
            return self.render_state(state)
        opening = float(np.clip(state[6] / self.robot.gripper_open_width, 0.0, 1.0))
        return render_arm_map(self.robot.chain_points(q), state[:3], axis_angle_to_matrix(state[3:6]), opening,
                              self.rig.camera)

    def render_state(self, state: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 action map of a (7,) state, in the rig camera's resolution."""
        opening = float(np.clip(state[6] / self.robot.gripper_open_width, 0.0, 1.0))
        return render_action_map(state[:3], axis_angle_to_matrix(state[3:6]), opening, self.rig.camera)
