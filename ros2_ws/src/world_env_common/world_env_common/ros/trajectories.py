"""JointTrajectory messages into a ROS-free command follower, as a joint_trajectory_controller
takes them: shared by the nodes that stand in for an arm (LIBERO stand-in, world simulator)."""

from __future__ import annotations

from collections.abc import Callable

from trajectory_msgs.msg import JointTrajectory

from world_env_common.trajectory import TrajectoryError


def seconds(stamp) -> float:
    """A builtin_interfaces Time or Duration in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def follow_trajectory(msg: JointTrajectory, controller: str, setter: Callable, now: float,
                      note: Callable[[str], None]) -> None:
    """Hand ``msg`` to ``setter(names, points, start_time)`` (a zero stamp starts at ``now``, as
    JTC does); a refused trajectory's reason and the setter's notes go to ``note`` (the node
    reports each once), prefixed with the ``controller`` ("arm" or "gripper")."""
    start = seconds(msg.header.stamp) or now
    points = [(seconds(p.time_from_start), list(p.positions)) for p in msg.points]
    try:
        notes = setter(list(msg.joint_names), points, start)
    except TrajectoryError as err:
        note(f"dropping {controller}_controller trajectory: {err}")
        return
    for text in notes:
        note(f"{controller}_controller trajectory: {text}")
