"""Action map: the commanded end-effector state drawn as markers on a black image.

The world model takes this image as a pixel condition, so the encoding is fixed and exact.
Image: (H, W, 3) uint8 RGB, upright, same camera model (and resolution) as the frame it
conditions; background (0, 0, 0). With s = min(H, W) / 128 (1 at 128 px):

1. Orientation axes, drawn first in the order z, y, x (later ones on top): a straight segment
   from the projection of the commanded position p to the projection of p + AXIS_LENGTH_M * R[:, k]
   (R = commanded rotation, columns = end-effector axes in the world), coloured
   x = (255, 0, 0), y = (0, 255, 0), z = (0, 0, 255), thickness max(1, round(s)) px.
2. Position disc, drawn last: filled disc of radius max(1, round(3 s)) px centred on the
   projection of p, grey level g = round(64 + 191 * gripper_opening) in all three channels
   (closed = 64, fully open = 255), so the opening is read from the centre pixel's value.

Arm action map (``render_arm_map``): the same markers drawn over the arm's kinematic chain, the
segments between consecutive points of ``PandaModel.chain_points`` (joint origins 1-7, then the
grip site), thickness max(1, round(6 s)) px, segment i of n grey level round(90 + 165 i / (n - 1)),
brighter towards the hand; the markers above are drawn on top. The whole arm tells the world
model where every link goes, not only the hand (README "Why the reflector does not fire in
imagination"). Segments with an end less than NEAR_M in front of the camera are not drawn.

Drawing is cv2 with 8-connected, non-antialiased primitives at 1/16 px sub-pixel precision:
deterministic and with only the five colours above (plus black and the arm's greys). Segments are clipped in 3D
at NEAR_M in front of the camera; if p itself is not at least NEAR_M in front of the camera
nothing is drawn (all-black image). Markers outside the image are clipped by cv2.
"""

from __future__ import annotations

import cv2
import numpy as np

from .camera import CameraModel

AXIS_LENGTH_M = 0.06
NEAR_M = 0.01
AXIS_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))  # x, y, z (RGB)
_SHIFT = 4  # cv2 fixed-point fractional bits: coordinates are in 1/16 px
_DRAW_LIMIT = 1 << 20  # px; keeps fixed-point coordinates inside int32


def gripper_grey_level(gripper_opening: float) -> int:
    """Disc grey level for an opening in [0, 1] (clipped): 64 closed ... 255 open."""
    return int(round(64 + 191 * float(np.clip(gripper_opening, 0.0, 1.0))))


def _fixed(uv: np.ndarray) -> tuple[int, int]:
    # Pixel centres are at integer coordinates for both CameraModel and cv2, so no offset.
    q = np.clip(np.round(np.asarray(uv) * (1 << _SHIFT)), -_DRAW_LIMIT, _DRAW_LIMIT)
    return int(q[0]), int(q[1])


def render_action_map(position, rotation, gripper_opening: float, camera: CameraModel) -> np.ndarray:
    """Draw the commanded pose (encoding in the module docstring).

    position: (3,) metres, world frame. rotation: (3, 3) world-from-end-effector rotation.
    gripper_opening: 0 = closed, 1 = open. Returns (camera.height, camera.width, 3) uint8.
    """
    img = np.zeros((camera.height, camera.width, 3), np.uint8)
    p = np.asarray(position, dtype=np.float64).reshape(3)
    R = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    p_cam = camera.world_to_camera(p)
    if p_cam[2] < NEAR_M:
        return img
    s = min(camera.height, camera.width) / 128.0
    thickness, radius = max(1, round(s)), max(1, round(3 * s))
    R_cam = camera.T_world_camera[:3, :3].T @ R
    centre = camera.project(p[None])[0][0]
    for k in (2, 1, 0):
        tip = p_cam + AXIS_LENGTH_M * R_cam[:, k]
        if tip[2] < NEAR_M:  # clip the segment where it crosses the near plane
            tip = p_cam + (tip - p_cam) * (p_cam[2] - NEAR_M) / (p_cam[2] - tip[2])
        tip_uv = np.array([camera.fx * tip[0] / tip[2] + camera.cx, camera.fy * tip[1] / tip[2] + camera.cy])
        cv2.line(img, _fixed(centre), _fixed(tip_uv), AXIS_COLORS[k], thickness, cv2.LINE_8, _SHIFT)
    g = gripper_grey_level(gripper_opening)
    cv2.circle(img, _fixed(centre), radius << _SHIFT, (g, g, g), -1, cv2.LINE_8, _SHIFT)
    return img


def render_arm_map(chain_points, position, rotation, gripper_opening: float, camera: CameraModel) -> np.ndarray:
    """Draw the arm's kinematic chain, then the commanded pose's markers (module docstring).

    chain_points: (n, 3) world points, base to hand (``PandaModel.chain_points``); the other
    arguments as ``render_action_map``. Returns (camera.height, camera.width, 3) uint8.
    """
    img = np.zeros((camera.height, camera.width, 3), np.uint8)
    points = np.asarray(chain_points, dtype=np.float64).reshape(-1, 3)
    uv, depth = camera.project(points)
    thickness = max(1, round(6 * min(camera.height, camera.width) / 128.0))
    segments = len(points) - 1
    for i in range(segments):
        if min(depth[i], depth[i + 1]) < NEAR_M:
            continue
        g = int(round(90 + 165 * i / max(segments - 1, 1)))
        cv2.line(img, _fixed(uv[i]), _fixed(uv[i + 1]), (g, g, g), thickness, cv2.LINE_8, _SHIFT)
    markers = render_action_map(position, rotation, gripper_opening, camera)
    drawn = markers.any(-1)
    img[drawn] = markers[drawn]
    return img
