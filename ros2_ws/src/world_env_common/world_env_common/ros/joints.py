"""sensor_msgs/JointState <-> ordered joint vectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sensor_msgs.msg import JointState


class JointStateError(ValueError):
    """A joint-state message that cannot give the positions the caller needs."""


def joint_positions(msg: JointState, names: Sequence[str]) -> np.ndarray:
    """Positions of ``names`` in that order, from a message that may list joints in any order.

    Raises ``JointStateError`` if the message is malformed, lacks a joint, or holds a
    non-finite position.
    """
    if len(msg.position) != len(msg.name):
        raise JointStateError(f"{len(msg.name)} names but {len(msg.position)} positions")
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [name for name in names if name not in index]
    if missing:
        raise JointStateError(f"missing joint(s) {missing}; message has {list(msg.name)}")
    q = np.array([msg.position[index[name]] for name in names], dtype=np.float64)
    if not np.all(np.isfinite(q)):
        bad = [name for name, value in zip(names, q) if not np.isfinite(value)]
        raise JointStateError(f"non-finite position for joint(s) {bad}")
    return q


def make_joint_state(names: Sequence[str], positions: Sequence[float], stamp=None) -> JointState:
    """A ``JointState`` with names and positions (velocities and efforts left empty)."""
    if len(names) != len(positions):
        raise JointStateError(f"{len(names)} names but {len(positions)} positions")
    msg = JointState()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(p) for p in positions]
    return msg
