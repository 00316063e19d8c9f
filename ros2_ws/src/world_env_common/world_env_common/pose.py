"""Rotation helpers shared by the robot model, the action map and training (numpy only).

Conventions
- Quaternions are (4,) arrays; every function names its order: ``xyzw`` (scalar last: scipy,
  robosuite/LIBERO observations such as ``robot0_eef_quat``) or ``wxyz`` (scalar first: MuJoCo
  ``xquat``, MJCF ``quat=`` attributes, Pinocchio's ``Quaternion(w, x, y, z)``).
- Rotation matrices are (3, 3) and map vectors from the rotated (child) frame to the reference
  (parent) frame: ``v_parent = R @ v_child``.
- Axis-angle (rotation vector) is a (3,) array ``unit_axis * angle``, angle in radians.
  ``matrix_to_axis_angle`` returns the canonical vector (angle in [0, pi]).
  ``quat_to_axis_angle`` / ``axis_angle_to_quat`` follow robosuite's ``quat2axisangle`` /
  ``axisangle2quat`` exactly: the angle is ``2 acos(w)`` in [0, 2 pi), so a quaternion with
  w < 0 gives an angle above pi. That keeps the quaternion's sign, which LIBERO's 8-D
  proprio state (and so OpenVLA-style policies) depends on: the Panda's hand points down,
  a rotation by ~pi, where the two signs give very different vectors.
"""
from __future__ import annotations

import numpy as np
import pinocchio as pin
from scipy.spatial.transform import Rotation

__all__ = [
    "quat_xyzw_to_wxyz",
    "quat_wxyz_to_xyzw",
    "quat_to_matrix",
    "matrix_to_quat",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "quat_to_axis_angle",
    "axis_angle_to_quat",
    "quat_multiply",
    "rotation_angle",
]

# Below this |sin(angle/2)| a quaternion is treated as the identity (robosuite uses isclose(den, 0)).
_EPS = 1e-12


def quat_xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    """(..., 4) xyzw -> (..., 4) wxyz."""
    q = np.asarray(q, dtype=float)
    return q[..., [3, 0, 1, 2]]


def quat_wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """(..., 4) wxyz -> (..., 4) xyzw."""
    q = np.asarray(q, dtype=float)
    return q[..., [1, 2, 3, 0]]


def quat_to_matrix(q: np.ndarray, order: str = "xyzw") -> np.ndarray:
    """(..., 4) quaternion (normalised here) in ``order`` ("xyzw" or "wxyz") -> (..., 3, 3)."""
    q = np.asarray(q, dtype=float)
    if order == "wxyz":
        q = quat_wxyz_to_xyzw(q)
    elif order != "xyzw":
        raise ValueError(f"order must be 'xyzw' or 'wxyz', got {order!r}")
    return Rotation.from_quat(q).as_matrix()


def matrix_to_quat(rot: np.ndarray, order: str = "xyzw") -> np.ndarray:
    """(..., 3, 3) -> (..., 4) unit quaternion in ``order``, sign chosen so that w >= 0."""
    q = Rotation.from_matrix(np.asarray(rot, dtype=float)).as_quat(canonical=True)
    if order == "wxyz":
        return quat_xyzw_to_wxyz(q)
    if order != "xyzw":
        raise ValueError(f"order must be 'xyzw' or 'wxyz', got {order!r}")
    return q


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """(3,) rotation vector (any norm, radians) -> (3, 3)."""
    return pin.exp3(np.asarray(aa, dtype=float).reshape(3))


def matrix_to_axis_angle(rot: np.ndarray) -> np.ndarray:
    """(3, 3) -> (3,) canonical rotation vector, angle in [0, pi]."""
    return pin.log3(np.asarray(rot, dtype=float).reshape(3, 3))


def quat_to_axis_angle(q_xyzw: np.ndarray) -> np.ndarray:
    """(..., 4) xyzw quaternion -> (..., 3) rotation vector, robosuite's ``quat2axisangle``.

    Sign-preserving: angle = 2 acos(w) in [0, 2 pi). The input is normalised first.
    """
    q = np.asarray(q_xyzw, dtype=float)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w = np.clip(q[..., 3:4], -1.0, 1.0)
    den = np.sqrt(1.0 - w * w)
    angle = 2.0 * np.arccos(w)
    safe = den > _EPS
    return np.where(safe, q[..., :3] * angle / np.where(safe, den, 1.0), 0.0)


def axis_angle_to_quat(aa: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vector -> (..., 4) xyzw quaternion, robosuite's ``axisangle2quat``.

    Inverse of ``quat_to_axis_angle``: w = cos(angle / 2) is negative for angles above pi.
    """
    aa = np.asarray(aa, dtype=float)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    safe = angle > _EPS
    axis = np.where(safe, aa / np.where(safe, angle, 1.0), 0.0)
    return np.concatenate([axis * np.sin(angle / 2.0), np.cos(angle / 2.0)], axis=-1)


def quat_multiply(a_xyzw: np.ndarray, b_xyzw: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of (..., 4) xyzw quaternions (rotation a after b), sign kept."""
    a = np.asarray(a_xyzw, dtype=float)
    b = np.asarray(b_xyzw, dtype=float)
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        axis=-1,
    )


def rotation_angle(rot_a: np.ndarray, rot_b: np.ndarray) -> float:
    """Geodesic distance (radians, in [0, pi]) between two (3, 3) rotations."""
    # log3 stays accurate for tiny angles, where arccos of the trace loses half the digits.
    rel = np.asarray(rot_a, dtype=float).T @ np.asarray(rot_b, dtype=float)
    return float(np.linalg.norm(pin.log3(rel)))
