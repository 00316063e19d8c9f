"""A rig: where the camera and the robot stand in one world frame.

A rig file (YAML) is what a node needs to relate joint states to pixels: the camera model
and the robot base placement. For LIBERO it comes from the scene (``Rig.from_mujoco``); for a
real robot from the camera calibration (intrinsics, and the camera pose in the robot's base
frame, with ``robot_base`` at the origin)::

    camera:            # CameraModel.to_dict(): pinhole, OpenCV optical frame, upright image
      name: agentview
      width: 128
      height: 128
      fx: 154.5
      fy: 154.5
      cx: 63.5
      cy: 63.5
      T_world_camera: [[...], [...], [...], [0, 0, 0, 1]]   # camera pose in the world
    robot_base:        # pose of the robot's base body (robosuite robot0_base) in the world
      position: [-0.6, 0.0, 0.0]                            # metres
      quaternion_wxyz: [1.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .camera import CameraModel


class RigError(ValueError):
    """A rig file that is missing, unreadable or malformed."""


@dataclass
class Rig:
    camera: CameraModel
    base_position: np.ndarray  # (3,) m
    base_quat_wxyz: np.ndarray  # (4,) unit quaternion

    @classmethod
    def from_mujoco(cls, model, data, camera_name: str, height: int, width: int,
                    robot_prefix: str = "robot0_") -> "Rig":
        """The rig of a running robosuite/LIBERO scene (after ``mj_forward``)."""
        import mujoco

        raw_model = getattr(model, "_model", model)
        raw_data = getattr(data, "_data", data)
        body = mujoco.mj_name2id(raw_model, mujoco.mjtObj.mjOBJ_BODY, f"{robot_prefix}base")
        if body < 0:
            raise RigError(f"no body {robot_prefix}base in the MuJoCo model")
        return cls(CameraModel.from_mujoco(model, data, camera_name, height, width),
                   raw_data.xpos[body].copy(), raw_data.xquat[body].copy())

    @classmethod
    def from_trajectory(cls, camera: CameraModel, states: np.ndarray, joint_positions: np.ndarray,
                        tolerance_m: float = 1e-3) -> "Rig":
        """The rig of a recorded episode: its camera, and the base pose that makes our forward
        kinematics of the recorded joints give the recorded end-effector poses (a least-squares
        fit over the frames). Raises ``RigError`` if no single base pose explains them to
        ``tolerance_m`` (then the recording's states and joints disagree)."""
        from .pose import axis_angle_to_matrix, matrix_to_quat, quat_xyzw_to_wxyz
        from .robot import PandaModel

        states, joints = np.asarray(states, dtype=float), np.asarray(joint_positions, dtype=float)
        if len(states) == 0 or states.shape[1:] != (7,) or joints.shape != (len(states), 7):
            raise RigError(f"episode: states {states.shape} and joint positions {joints.shape}, expected (T, 7) each")
        robot = PandaModel()  # base at the origin: FK in the base frame
        local = [robot.fk(q) for q in joints]
        # Orientation: R_world = R_base R_local for every frame; the mean of R_world R_local^T,
        # projected back onto a rotation.
        mean = sum(axis_angle_to_matrix(s[3:6]) @ rot.T for s, (_, rot) in zip(states, local)) / len(states)
        u, _, vt = np.linalg.svd(mean)
        rot_base = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
        position = np.mean([s[:3] - rot_base @ pos for s, (pos, _) in zip(states, local)], axis=0)
        residual = max(float(np.linalg.norm(s[:3] - (rot_base @ pos + position))) for s, (pos, _) in zip(states, local))
        if residual > tolerance_m:
            raise RigError(f"episode: no single base pose explains its states and joints "
                           f"(residual {residual * 1e3:.1f} mm > {tolerance_m * 1e3:.1f} mm)")
        return cls(camera, position, quat_xyzw_to_wxyz(matrix_to_quat(rot_base)))

    def to_dict(self) -> dict:
        return {"camera": self.camera.to_dict(),
                "robot_base": {"position": [float(v) for v in self.base_position],
                               "quaternion_wxyz": [float(v) for v in self.base_quat_wxyz]}}

    @classmethod
    def from_dict(cls, data: dict, source: str = "rig") -> "Rig":
        try:
            camera = CameraModel.from_dict(data["camera"])
            position = np.asarray(data["robot_base"]["position"], dtype=float)
            quat = np.asarray(data["robot_base"]["quaternion_wxyz"], dtype=float)
        except (KeyError, TypeError, ValueError) as err:
            raise RigError(f"{source}: malformed rig ({type(err).__name__}: {err}); "
                           "expected keys camera{{...}} and robot_base{{position, quaternion_wxyz}}") from err
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise RigError(f"{source}: robot_base.position must be 3 finite numbers, got {position.tolist()}")
        if quat.shape != (4,) or not np.isclose(np.linalg.norm(quat), 1.0, atol=1e-3):
            raise RigError(f"{source}: robot_base.quaternion_wxyz must be a unit quaternion, got {quat.tolist()}")
        return cls(camera, position, quat / np.linalg.norm(quat))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)  # atomic: a reader never sees half a file

    @classmethod
    def load(cls, path: str | Path) -> "Rig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as err:
            raise RigError(f"cannot read rig file {path}: {err.strerror}") from err
        except yaml.YAMLError as err:
            raise RigError(f"rig file {path} is not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise RigError(f"rig file {path}: expected a mapping, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))
