"""Pinhole camera model of a simulator (or real) camera, numpy only.

Conventions (everything in this project that touches pixels follows them):

- Camera frame: OpenCV optical convention, x right, y down, z forward (the viewing
  direction). MuJoCo cameras look along their -z axis with +y up, so
  ``R_world_optical = R_world_mujoco @ diag(1, -1, -1)``; ``from_mujoco`` applies this once.
- Images are UPRIGHT: row 0 is the top of the picture. MuJoCo/robosuite/LIBERO hand out
  images (and depth buffers) upside down (OpenGL's origin is bottom-left); ``upright`` is the
  one place that flip happens.
- Pixel coordinates (u, v) = (column, row) as floats, with the CENTRE of pixel (0, 0) at
  (0.0, 0.0) (OpenCV, ROS CameraInfo and cv2 drawing all use this). Pixel (i, j) therefore
  covers [j - 0.5, j + 0.5) x [i - 0.5, i + 0.5) and the image centre is ((W-1)/2, (H-1)/2).
- Units: metres, radians; ``depth`` is planar depth (z in the optical frame), not range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math

import numpy as np

# MuJoCo camera axes (x right, y up, z backward) -> OpenCV optical axes (x right, y down, z fwd).
_MUJOCO_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


def upright(image: np.ndarray) -> np.ndarray:
    """Flip a MuJoCo/robosuite/LIBERO image, depth or segmentation buffer to upright.

    image: (H, W) or (H, W, C) as rendered (row 0 = bottom). Returns a C-contiguous copy with
    row 0 = top. Its own inverse.
    """
    return np.ascontiguousarray(image[::-1])


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) T_world_camera of an optical frame (x right, y down, z forward) at ``eye`` (3,)
    looking at ``target`` (3,), with image "up" towards ``up`` (3,); all in metres, world frame."""
    z = np.subtract(target, eye, dtype=float)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    pose[:3, 3] = eye
    return pose


def depth_from_mujoco_zbuffer(zbuffer: np.ndarray, model) -> np.ndarray:
    """Planar depth in metres from MuJoCo's normalised [0, 1] depth buffer.

    zbuffer: (H, W) float as returned by ``sim.render(..., depth=True)`` (flip it with
    ``upright`` like the image). model: mujoco.MjModel or robosuite's wrapper (reads
    vis.map.znear/zfar, which MuJoCo scales by stat.extent). Returns (H, W) float.
    """
    extent = float(model.stat.extent)
    near = float(model.vis.map.znear) * extent
    far = float(model.vis.map.zfar) * extent
    return near / (1.0 - np.asarray(zbuffer, dtype=np.float64) * (1.0 - near / far))


@dataclass
class CameraModel:
    """Distortion-free pinhole camera.

    width, height: image size in pixels. fx, fy, cx, cy: intrinsics in pixels, pixel-centre
    convention of the module docstring. T_world_camera: (4, 4) pose of the OpenCV optical frame
    in the world (maps camera-frame points to world points).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    T_world_camera: np.ndarray = field(default_factory=lambda: np.eye(4))
    name: str = "camera"

    def __post_init__(self):
        self.width, self.height = int(self.width), int(self.height)
        self.fx, self.fy, self.cx, self.cy = map(float, (self.fx, self.fy, self.cx, self.cy))
        self.T_world_camera = np.asarray(self.T_world_camera, dtype=np.float64).reshape(4, 4)

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_fovy(cls, fovy_deg: float, height: int, width: int, T_world_camera=None,
                  name: str = "camera") -> "CameraModel":
        """Camera with MuJoCo's projection: fovy spans the full image height (pixel edges),
        square pixels, principal point at the image centre; the horizontal field of view
        follows from the aspect ratio."""
        f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0,
                   np.eye(4) if T_world_camera is None else T_world_camera, name)

    @classmethod
    def from_mujoco(cls, model, data, camera_name: str, height: int, width: int) -> "CameraModel":
        """Read a fixed camera from a MuJoCo scene at any render resolution.

        model, data: mujoco.MjModel/MjData or robosuite's MjSim wrappers (sim.model, sim.data);
        mj_forward must have run (the pose comes from data.cam_xpos/cam_xmat).
        """
        m, d = getattr(model, "_model", model), getattr(data, "_data", data)
        cam_id = m.camera(camera_name).id
        if np.any(np.asarray(m.cam_sensorsize[cam_id]) > 0):
            # Cameras specified by sensorsize/focal use a different frustum; LIBERO has none.
            raise NotImplementedError(f"camera {camera_name!r} uses sensorsize/focal intrinsics")
        T = np.eye(4)
        T[:3, :3] = np.asarray(d.cam_xmat[cam_id], dtype=np.float64).reshape(3, 3) @ _MUJOCO_TO_OPTICAL
        T[:3, 3] = d.cam_xpos[cam_id]
        return cls.from_fovy(float(m.cam_fovy[cam_id]), height, width, T, camera_name)

    def resized(self, height: int, width: int) -> "CameraModel":
        """The same camera rendered at another resolution (scales about pixel edges, so
        u' + 0.5 = (u + 0.5) * width / self.width)."""
        sx, sy = width / self.width, height / self.height
        return CameraModel(width, height, self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                           (self.cy + 0.5) * sy - 0.5, self.T_world_camera.copy(), self.name)

    # --- geometry -----------------------------------------------------------------------

    @property
    def K(self) -> np.ndarray:
        """(3, 3) intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def position(self) -> np.ndarray:
        """(3,) camera centre in the world, metres."""
        return self.T_world_camera[:3, 3].copy()

    def world_to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 3) points in the optical frame."""
        R, t = self.T_world_camera[:3, :3], self.T_world_camera[:3, 3]
        return (np.asarray(points_world, dtype=np.float64) - t) @ R

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points into the upright image.

        points_world: (N, 3) metres. Returns uv (N, 2) float pixel coordinates (u = column,
        v = row, pixel centres at integers; may lie outside the image) and depth (N,) planar
        depth in metres. Points with depth <= 0 (at or behind the camera) get uv = NaN.
        """
        p = self.world_to_camera(points_world)
        z = p[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.fx * p[..., 0] / z + self.cx, self.fy * p[..., 1] / z + self.cy], -1)
        uv[z <= 0] = np.nan
        return uv, z

    def ray_directions(self) -> np.ndarray:
        """(H, W, 3) unit viewing rays in the WORLD frame through each pixel centre, row 0 = top:
        the point cam.position + s * rays[v, u] projects to (u, v) for every s > 0."""
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64),
                           np.arange(self.height, dtype=np.float64))
        d = np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], -1)
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return d @ self.T_world_camera[:3, :3].T

    def point_map(self, depth: np.ndarray) -> np.ndarray:
        """(H, W) upright planar depth in metres -> (H, W, 3) world points."""
        rays = self.ray_directions()
        cos = rays @ self.T_world_camera[:3, 2]  # cosine between ray and optical axis
        return self.position + rays * (np.asarray(depth, dtype=np.float64) / cos)[..., None]

    # --- serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-able description (stored with datasets)."""
        return {"name": self.name, "width": self.width, "height": self.height,
                "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
                "T_world_camera": self.T_world_camera.tolist(),
                "convention": "opencv_optical; pixel (0,0) centre at (0,0); upright rows"}

    @classmethod
    def from_dict(cls, d: dict) -> "CameraModel":
        return cls(d["width"], d["height"], d["fx"], d["fy"], d["cx"], d["cy"],
                   np.asarray(d["T_world_camera"]), d.get("name", "camera"))

    def camera_info_fields(self) -> dict:
        """Field values of sensor_msgs/msg/CameraInfo (ROS 2 lowercase names, so
        ``CameraInfo(header=..., **cam.camera_info_fields())`` works): height, width,
        distortion_model 'plumb_bob', d (5 zeros), k (9, row-major K), r (9, identity),
        p (12, [K | 0]). ROS uses the same pixel-centre convention as this module."""
        K = self.K
        return {"height": self.height, "width": self.width, "distortion_model": "plumb_bob",
                "d": [0.0] * 5, "k": K.ravel().tolist(), "r": np.eye(3).ravel().tolist(),
                "p": np.hstack([K, np.zeros((3, 1))]).ravel().tolist()}
