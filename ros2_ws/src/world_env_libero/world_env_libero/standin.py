"""LIBERO as a stand-in for the real robot: joint trajectories in, OSC_POSE actions to LIBERO.

The ROS-free core of ``robot_node`` (the node only converts messages and keeps time).

Commands arrive as a ros2_control ``joint_trajectory_controller`` takes them: joint names and
points ``(time_from_start, positions)``, followed by time. LIBERO's controller is OSC_POSE
(end-effector deltas) and stays exactly the benchmark's, so every control step turns the
interpolated joint target into the OSC action that drives the end effector towards the pose
our forward kinematics gives for it (``osc_action``).

Trajectory semantics (as joint_trajectory_controller with position-only points):
- A trajectory starts at ``start_time`` (the message's header.stamp; zero = on receipt) from the
  joints' measured positions at receipt, and interpolates linearly between points by time
  (JTC interpolates linearly when points carry positions only). Before its start it holds
  the positions at receipt; after its last point it holds the last point.
- A new trajectory replaces the one being followed (from the current positions).
- Points must have strictly increasing ``time_from_start`` >= 0; a first point at 0 jumps there.

Gripper: the opening width a finger target asks for (finger_joint1 - finger_joint2, robosuite's
sign convention: joint1 in [0, 0.04], joint2 in [-0.04, 0]) decides LIBERO's binary gripper
action: open (-1) above half the full opening, close (+1) otherwise; 0 (keep) with no command.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from world_env_common.pose import matrix_to_axis_angle
from world_env_common.robot import DEFAULT_FINGER_JOINT_NAMES, DEFAULT_JOINT_NAMES, PandaModel
from world_env_common.trajectory import (CommandFollower, JointTrajectoryFollower, TrajectoryError,
                                         validate_trajectory)

__all__ = ["JointTrajectoryFollower", "StandIn", "TrajectoryError", "camera_rate_budget", "osc_action",
           "validate_trajectory"]


def osc_action(robot: PandaModel, q: Sequence[float], q_target: Sequence[float] | None,
               finger_target: float | None = None) -> np.ndarray:
    """(7,) LIBERO OSC_POSE action that moves the arm from joints ``q`` towards ``q_target``.

    Position: (p_target - p_current) / 0.05 m; rotation: axis-angle of R_target R_current^T
    (world frame, as OSC_POSE applies its delta on the left) / 0.5 rad; both from our FK and
    clipped to [-1, 1]. Unclipped, the OSC goal of the step is exactly the target pose, so each
    step is a proportional servo towards it, saturating at 5 cm and 0.5 rad per step (1 m/s,
    10 rad/s at 20 Hz). ``q_target`` None holds (zero deltas).
    finger_target: commanded opening width (m, 0 closed, ``robot.gripper_open_width`` open):
    -1 (open) if above half open, else +1 (close); None gives 0 (the gripper keeps its state).
    """
    action = np.zeros(7)
    if q_target is not None:
        pos, rot = robot.fk(np.asarray(q, dtype=float))
        pos_t, rot_t = robot.fk(np.asarray(q_target, dtype=float))
        action[:3] = (pos_t - pos) / robot.OSC_POS_MAX_M
        action[3:6] = matrix_to_axis_angle(rot_t @ rot.T) / robot.OSC_ROT_MAX_RAD
    if finger_target is not None:
        action[6] = -1.0 if finger_target > 0.5 * robot.gripper_open_width else 1.0
    return np.clip(action, -robot.OSC_INPUT_MAX, robot.OSC_INPUT_MAX)


class StandIn:
    """A LIBERO task driven like a real arm: trajectories in, joint states and images out.

    Args:
        env: the ``LiberoEnv`` to drive (owned: ``close`` closes it).
        joint_names: the 7 arm joint names of commands and joint states.
        finger_joint_names: the 2 finger joint names.

    Call ``reset(init_state_id)`` first; then ``set_arm_trajectory``/``set_gripper_trajectory``
    whenever a command arrives, ``step(now)`` once per control period, ``render()`` for a frame.
    Times are seconds on one clock of the caller's choice (the node uses ROS time).
    """

    def __init__(self, env, joint_names: Sequence[str] = DEFAULT_JOINT_NAMES,
                 finger_joint_names: Sequence[str] = DEFAULT_FINGER_JOINT_NAMES):
        self.env = env
        self.robot: PandaModel = env.robot
        self.joint_names, self.finger_joint_names = list(joint_names), list(finger_joint_names)
        if len(self.joint_names) != 7 or len(self.finger_joint_names) != 2:
            raise ValueError(f"need 7 arm joint names and 2 finger joint names, got {self.joint_names} "
                             f"and {self.finger_joint_names}")
        if len(set(self.joint_names + self.finger_joint_names)) != 9:
            raise ValueError(f"joint names must be distinct: {self.joint_names + self.finger_joint_names}")
        self.commands = CommandFollower(self.robot, self.joint_names, self.finger_joint_names)
        self.obs: dict = {}
        self.success = False

    # ------------------------------------------------------------------ episode
    def reset(self, init_state_id: int) -> dict:
        """Reset the task to a LIBERO init state (10 settle steps); forgets any command.
        Returns the observation without the image."""
        obs = self.env.reset(init_state_id)
        obs.pop("image", None)
        self.obs, self.success = obs, False
        self.commands.clear()
        return obs

    @property
    def joint_positions(self) -> np.ndarray:
        return self.obs["joint_positions"]

    @property
    def finger_positions(self) -> np.ndarray:
        return self.obs["finger_positions"]

    @property
    def joint_velocities(self) -> np.ndarray:
        """(7,) arm joint velocities (rad/s) from LIBERO's last observation."""
        return np.asarray(self.env.raw_obs["robot0_joint_vel"], dtype=float)

    @property
    def finger_velocities(self) -> np.ndarray:
        """(2,) finger joint velocities (m/s) from LIBERO's last observation."""
        return np.asarray(self.env.raw_obs["robot0_gripper_qvel"], dtype=float)

    # ------------------------------------------------------------------ commands
    def set_arm_trajectory(self, joint_names: Sequence[str], points, start_time: float) -> list[str]:
        """Follow an arm trajectory: all 7 arm joints in any order, optionally with finger joints
        (then its finger part replaces the gripper command too). Returns notes for the log
        (targets clamped into the joint limits). Raises ``TrajectoryError`` with the reason."""
        return self.commands.set_arm(joint_names, points, start_time, self.joint_positions, self._width())

    def set_gripper_trajectory(self, joint_names: Sequence[str], points, start_time: float) -> list[str]:
        """Follow a gripper trajectory of one or both finger joints (target finger positions).
        Returns notes for the log; raises ``TrajectoryError`` with the reason."""
        return self.commands.set_gripper(joint_names, points, start_time, self._width())

    def _width(self) -> float:
        return self.robot.gripper_width(self.finger_positions)

    # ------------------------------------------------------------------ control
    def action(self, now: float) -> np.ndarray:
        """(7,) OSC_POSE action of the current command at time ``now``."""
        return osc_action(self.robot, self.joint_positions, self.commands.arm_target(now),
                          self.commands.width_target(now))

    def step(self, now: float) -> tuple[dict, bool]:
        """One LIBERO control step towards the command at ``now``, without rendering.
        Returns (obs without ``image``, success)."""
        self.obs, self.success = self.env.step(self.action(now), render=False)
        return self.obs, self.success

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 upright RGB agent view of the current state (~60 ms on CPU)."""
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def camera_rate_budget(step_s: float, render_s: float, control_rate_hz: float, camera_rate_hz: float,
                       busy_fraction: float = 0.9, min_rate_hz: float = 1.0) -> float:
    """Camera frames per second that fit next to the control loop on one thread (control first).

    step_s, render_s: recent duration of one control step and of one render (s, wall clock).
    The control loop takes ``step_s * control_rate_hz`` of each second; renders get what is
    left of ``busy_fraction`` of it. Returns at most ``camera_rate_hz`` and at least
    ``min(min_rate_hz, camera_rate_hz)``, so a starved camera still shows the scene.
    """
    left = busy_fraction - step_s * control_rate_hz
    fit = left / render_s if render_s > 0 else camera_rate_hz
    return float(min(camera_rate_hz, max(fit, min(min_rate_hz, camera_rate_hz))))
