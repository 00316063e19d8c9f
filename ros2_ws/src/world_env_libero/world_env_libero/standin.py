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

__all__ = ["JointTrajectoryFollower", "StandIn", "TrajectoryError", "camera_rate_budget", "osc_action",
           "validate_trajectory"]


class TrajectoryError(ValueError):
    """A joint trajectory that cannot be followed; the message is the reason."""


def validate_trajectory(joint_names: Sequence[str], points: Sequence[tuple[float, Sequence[float]]],
                        known: Sequence[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Check a trajectory and return (names, times (K,), positions (K, J)) as floats.

    ``points``: (time_from_start in seconds, positions in the order of ``joint_names``).
    ``known``: the joint names the caller can command (None: any).
    Raises ``TrajectoryError`` (a ValueError) naming the reason: no joint names, duplicate or
    unknown joints, no points, a point whose number of positions differs from the number of
    joints, a non-finite position or time, a negative or non-increasing time_from_start.
    The messages name joints and point indices, never values, so that a node can report each
    reason once.
    """
    names = [str(n) for n in joint_names]
    if not names:
        raise TrajectoryError("trajectory names no joints")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TrajectoryError(f"duplicate joint name(s) {duplicates}")
    if known is not None:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise TrajectoryError(f"unknown joint name(s) {unknown} (known: {list(known)})")
    if len(points) == 0:
        raise TrajectoryError("trajectory has no points")
    times = np.empty(len(points))
    positions = np.empty((len(points), len(names)))
    for i, (t, pos) in enumerate(points):
        if len(pos) != len(names):
            raise TrajectoryError(f"point {i} has {len(pos)} positions for {len(names)} joints")
        p = np.asarray(pos, dtype=float)
        bad = [n for n, v in zip(names, p) if not np.isfinite(v)]
        if bad:
            raise TrajectoryError(f"point {i} has non-finite position(s) for joint(s) {bad}")
        if not np.isfinite(t):
            raise TrajectoryError(f"point {i} has a non-finite time_from_start")
        if t < 0:
            raise TrajectoryError(f"point {i} has a negative time_from_start")
        if i > 0 and t <= times[i - 1]:
            raise TrajectoryError(f"time_from_start does not increase at point {i}")
        times[i], positions[i] = float(t), p
    return names, times, positions


class JointTrajectoryFollower:
    """Samples a joint trajectory by time, as joint_trajectory_controller does (module doc).

    Args:
        joint_names: the J joints the trajectory names, in the order of its positions.
        points: [(time_from_start s, (J,) positions)], validated by ``validate_trajectory``.
        start_positions: (J,) positions at receipt, the start of the first segment; default the
            first point's (then the trajectory holds its first point until that point's time).
        start_time: absolute time (s, the caller's clock) that time_from_start counts from.
    Raises ``TrajectoryError`` for an invalid trajectory.
    """

    def __init__(self, joint_names: Sequence[str], points: Sequence[tuple[float, Sequence[float]]],
                 start_positions: Sequence[float] | None = None, start_time: float = 0.0):
        self.joint_names, times, positions = validate_trajectory(joint_names, points)
        if start_positions is None:
            start_positions = positions[0]
        start = np.asarray(start_positions, dtype=float)
        if start.shape != (len(self.joint_names),):
            raise TrajectoryError(f"start positions have shape {start.shape}, expected ({len(self.joint_names)},)")
        if times[0] > 0.0:  # a segment from the positions at receipt to the first point
            times, positions = np.concatenate([[0.0], times]), np.vstack([start, positions])
        self.times, self.positions = times, positions
        self.start_positions, self.start_time = start, float(start_time)

    @property
    def end_time(self) -> float:
        """Absolute time of the last point."""
        return self.start_time + float(self.times[-1])

    def done(self, now: float) -> bool:
        return now >= self.end_time

    def sample(self, now: float) -> np.ndarray:
        """(J,) positions at absolute time ``now`` (linear between points, held outside)."""
        t = float(now) - self.start_time
        if t < 0.0:
            return self.start_positions.copy()
        if t >= self.times[-1]:
            return self.positions[-1].copy()
        k = int(np.searchsorted(self.times, t, side="right")) - 1
        t0, t1 = self.times[k], self.times[k + 1]
        w = (t - t0) / (t1 - t0)
        return (1.0 - w) * self.positions[k] + w * self.positions[k + 1]


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


def finger_width(names: Sequence[str], positions: Sequence[float], finger_names: Sequence[str]) -> float:
    """Opening width (m) from finger joint targets: joint1 - joint2 (both named), or twice the
    one named (robosuite's fingers move symmetrically, joint2 negative)."""
    index = {n: i for i, n in enumerate(names)}
    f1, f2 = finger_names
    if f1 in index and f2 in index:
        return float(positions[index[f1]] - positions[index[f2]])
    if f1 in index:
        return 2.0 * float(positions[index[f1]])
    return -2.0 * float(positions[index[f2]])


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
        half = 0.5 * self.robot.gripper_open_width
        self.finger_lower, self.finger_upper = np.array([0.0, -half]), np.array([half, 0.0])
        self.obs: dict = {}
        self.success = False
        self.arm: JointTrajectoryFollower | None = None
        self.gripper: JointTrajectoryFollower | None = None

    # ------------------------------------------------------------------ episode
    def reset(self, init_state_id: int) -> dict:
        """Reset the task to a LIBERO init state (10 settle steps); forgets any command.
        Returns the observation without the image."""
        obs = self.env.reset(init_state_id)
        obs.pop("image", None)
        self.obs, self.success, self.arm, self.gripper = obs, False, None, None
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
        names, times, positions = validate_trajectory(joint_names, points,
                                                      self.joint_names + self.finger_joint_names)
        missing = [n for n in self.joint_names if n not in names]
        if missing:
            raise TrajectoryError(f"arm trajectory lacks joint(s) {missing}")
        cols = [names.index(n) for n in self.joint_names]
        arm = positions[:, cols]
        clamped = self.robot.clamp(arm)
        notes = []
        if not np.array_equal(clamped, arm):
            out = [n for n, o in zip(self.joint_names, np.any(clamped != arm, axis=0)) if o]
            notes.append(f"arm targets outside the joint limits clamped for joint(s) {out}")
        fingers = [i for i, n in enumerate(names) if n in self.finger_joint_names]
        gripper = None
        if fingers:
            gripper, note = self._gripper_follower([names[i] for i in fingers], times, positions[:, fingers],
                                                   start_time)
            notes += note
        self.arm = JointTrajectoryFollower(self.joint_names, list(zip(times, clamped)),
                                           self.joint_positions, start_time)
        if gripper is not None:
            self.gripper = gripper
        return notes

    def set_gripper_trajectory(self, joint_names: Sequence[str], points, start_time: float) -> list[str]:
        """Follow a gripper trajectory of one or both finger joints (target finger positions).
        Returns notes for the log; raises ``TrajectoryError`` with the reason."""
        names, times, positions = validate_trajectory(joint_names, points, self.finger_joint_names)
        self.gripper, notes = self._gripper_follower(names, times, positions, start_time)
        return notes

    def _gripper_follower(self, names, times, positions, start_time):
        """Follower of the opening width (one 'joint') from finger position targets."""
        idx = [self.finger_joint_names.index(n) for n in names]
        clamped = np.clip(positions, self.finger_lower[idx], self.finger_upper[idx])
        notes = []
        if not np.array_equal(clamped, positions):
            notes.append(f"finger targets outside [0, {self.finger_upper[0]}] (joint1) / "
                         f"[{self.finger_lower[1]}, 0] (joint2) clamped")
        widths = [[finger_width(names, p, self.finger_joint_names)] for p in clamped]
        start = [self.robot.gripper_width(self.finger_positions)]
        return JointTrajectoryFollower(["width"], list(zip(times, widths)), start, start_time), notes

    # ------------------------------------------------------------------ control
    def action(self, now: float) -> np.ndarray:
        """(7,) OSC_POSE action of the current command at time ``now``."""
        q_target = None if self.arm is None else self.arm.sample(now)
        width = None if self.gripper is None else float(self.gripper.sample(now)[0])
        return osc_action(self.robot, self.joint_positions, q_target, width)

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
