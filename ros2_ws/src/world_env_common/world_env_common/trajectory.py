"""Joint trajectories as a ros2_control joint_trajectory_controller takes them, ROS-free.

Shared by the nodes that stand in for an arm (the LIBERO stand-in and the world simulator):
``validate_trajectory`` checks one, ``JointTrajectoryFollower`` samples it by time with the
controller's semantics (see ``world_env_libero.standin`` for them), ``finger_width`` turns
finger joint targets into the gripper's opening width, and ``CommandFollower`` is the arm's and
the gripper's controllers together (validation, clamping, sampling of the current targets).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CommandFollower", "JointTrajectoryFollower", "TrajectoryError", "finger_width", "validate_trajectory"]


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


class CommandFollower:
    """The arm's and the gripper's joint_trajectory_controllers as a stand-in arm needs them.

    ``set_arm`` takes an arm trajectory (all 7 arm joints; finger joints in it command the
    gripper too), ``set_gripper`` finger targets (one or both fingers), each starting from the
    current positions; targets outside the joint limits of ``robot`` (a ``PandaModel``) or the
    fingers' ranges are clamped, and the returned notes say so. ``arm_target(now)`` and
    ``width_target(now)`` sample the commands (None: nothing commanded yet). Invalid
    trajectories raise ``TrajectoryError`` with the reason and change nothing.
    """

    def __init__(self, robot, joint_names: Sequence[str], finger_joint_names: Sequence[str]):
        self.robot = robot
        self.joint_names, self.finger_joint_names = list(joint_names), list(finger_joint_names)
        half = 0.5 * robot.gripper_open_width
        self.finger_lower, self.finger_upper = np.array([0.0, -half]), np.array([half, 0.0])
        self.arm: JointTrajectoryFollower | None = None
        self.gripper: JointTrajectoryFollower | None = None

    def clear(self) -> None:
        self.arm = self.gripper = None

    def set_arm(self, joint_names, points, start_time: float, q_now, width_now: float) -> list[str]:
        names, times, positions = validate_trajectory(joint_names, points, self.joint_names + self.finger_joint_names)
        missing = [n for n in self.joint_names if n not in names]
        if missing:
            raise TrajectoryError(f"arm trajectory lacks joint(s) {missing}")
        arm = positions[:, [names.index(n) for n in self.joint_names]]
        clamped = self.robot.clamp(arm)
        notes = []
        if not np.array_equal(clamped, arm):
            out = [n for n, o in zip(self.joint_names, np.any(clamped != arm, axis=0)) if o]
            notes.append(f"arm targets outside the joint limits clamped for joint(s) {out}")
        fingers = [i for i, n in enumerate(names) if n in self.finger_joint_names]
        gripper = None
        if fingers:
            gripper, note = self._gripper_follower([names[i] for i in fingers], times, positions[:, fingers],
                                                   start_time, width_now)
            notes += note
        self.arm = JointTrajectoryFollower(self.joint_names, list(zip(times, clamped)), q_now, start_time)
        if gripper is not None:
            self.gripper = gripper
        return notes

    def set_gripper(self, joint_names, points, start_time: float, width_now: float) -> list[str]:
        names, times, positions = validate_trajectory(joint_names, points, self.finger_joint_names)
        self.gripper, notes = self._gripper_follower(names, times, positions, start_time, width_now)
        return notes

    def _gripper_follower(self, names, times, positions, start_time, width_now):
        """Follower of the opening width (one 'joint') from finger position targets."""
        idx = [self.finger_joint_names.index(n) for n in names]
        clamped = np.clip(positions, self.finger_lower[idx], self.finger_upper[idx])
        notes = []
        if not np.array_equal(clamped, positions):
            notes.append(f"finger targets outside [0, {self.finger_upper[0]}] (joint1) / "
                         f"[{self.finger_lower[1]}, 0] (joint2) clamped")
        widths = [[finger_width(names, p, self.finger_joint_names)] for p in clamped]
        return JointTrajectoryFollower(["width"], list(zip(times, widths)), [width_now], start_time), notes

    def arm_target(self, now: float) -> np.ndarray | None:
        return None if self.arm is None else self.arm.sample(now)

    def width_target(self, now: float) -> float | None:
        return None if self.gripper is None else float(self.gripper.sample(now)[0])
