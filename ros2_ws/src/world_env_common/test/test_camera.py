"""CameraModel and action map: ROS-free, LIBERO-free unit tests."""

import json
import math

import numpy as np
import pytest

from world_env_common.action_map import AXIS_LENGTH_M, render_action_map
from world_env_common.camera import CameraModel, look_at, upright


@pytest.fixture
def cam():
    # Rectangular on purpose, roughly LIBERO's agent view.
    return CameraModel.from_fovy(45.0, 96, 160, look_at([1.0, 0.0, 0.65], [0.0, 0.0, 0.0]), "agentview")


def test_optical_axis_hits_principal_point(cam):
    p = cam.position + 0.8 * cam.T_world_camera[:3, 2]
    uv, depth = cam.project(p[None])
    np.testing.assert_allclose(uv[0], [79.5, 47.5], atol=1e-9)  # (W-1)/2, (H-1)/2
    np.testing.assert_allclose(depth, [0.8])


def test_fovy_spans_pixel_edges(cam):
    # A ray at +fovy/2 (down) reaches the bottom edge of the last row: v = H - 0.5.
    R = cam.T_world_camera[:3, :3]
    half = math.radians(45.0) / 2
    uv, _ = cam.project((cam.position + R @ [0.0, math.tan(half), 1.0])[None])
    np.testing.assert_allclose(uv[0], [79.5, 95.5], atol=1e-9)
    assert cam.fx == cam.fy  # square pixels; horizontal fov follows the aspect ratio


def test_behind_camera_is_nan(cam):
    uv, depth = cam.project((cam.position - cam.T_world_camera[:3, 2])[None])
    assert depth[0] < 0 and np.isnan(uv).all()


def test_resized_scales_intrinsics(cam):
    big = cam.resized(192, 320)
    assert (big.fx, big.fy, big.cx, big.cy) == (2 * cam.fx, 2 * cam.fy, 159.5, 95.5)
    pts = np.random.default_rng(0).uniform([-0.3, -0.3, 0.0], [0.3, 0.3, 0.3], (20, 3))
    np.testing.assert_allclose(big.project(pts)[0] + 0.5, 2 * (cam.project(pts)[0] + 0.5))
    # Resizing equals building the camera at the new resolution directly.
    direct = CameraModel.from_fovy(45.0, 64, 64, cam.T_world_camera)
    small = cam.resized(64, 64)
    assert small.fy == pytest.approx(direct.fy) and (small.cx, small.cy) == (direct.cx, direct.cy)
    assert small.fx == pytest.approx(cam.fx * 64 / 160)


def test_dict_round_trip(cam):
    back = CameraModel.from_dict(json.loads(json.dumps(cam.to_dict())))
    assert (back.name, back.width, back.height) == ("agentview", 160, 96)
    assert (back.fx, back.fy, back.cx, back.cy) == (cam.fx, cam.fy, cam.cx, cam.cy)
    np.testing.assert_array_equal(back.T_world_camera, cam.T_world_camera)


def test_camera_info_fields(cam):
    f = cam.camera_info_fields()
    assert (f["width"], f["height"], f["distortion_model"], f["d"]) == (160, 96, "plumb_bob", [0.0] * 5)
    assert f["k"] == [cam.fx, 0, 79.5, 0, cam.fy, 47.5, 0, 0, 1]
    assert f["p"] == [cam.fx, 0, 79.5, 0, 0, cam.fy, 47.5, 0, 0, 0, 1, 0]
    assert f["r"] == [1, 0, 0, 0, 1, 0, 0, 0, 1]


def test_upright_flips_rows():
    img = np.arange(4 * 3 * 2).reshape(4, 3, 2)
    up = upright(img)
    np.testing.assert_array_equal(up[0], img[3])
    np.testing.assert_array_equal(up[3], img[0])
    np.testing.assert_array_equal(upright(up), img)
    assert up.flags.c_contiguous


def test_ray_directions_agree_with_project(cam):
    rays = cam.ray_directions()
    assert rays.shape == (96, 160, 3)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0)
    v, u = np.mgrid[0:96, 0:160]
    uv, depth = cam.project((cam.position + 0.7 * rays).reshape(-1, 3))
    np.testing.assert_allclose(uv, np.stack([u, v], -1).reshape(-1, 2), atol=1e-9)
    assert (depth > 0).all()
    # Top-left ray points up and left of the optical axis: world-frame, upright rows.
    R = cam.T_world_camera[:3, :3]
    x, y, _ = R.T @ rays[0, 0]
    assert x < 0 and y < 0


def test_point_map_inverts_projection(cam):
    depth = np.full((96, 160), 1.3)
    pts = cam.point_map(depth)
    uv, z = cam.project(pts.reshape(-1, 3))
    np.testing.assert_allclose(z, 1.3)
    np.testing.assert_allclose(uv.reshape(96, 160, 2)[5, 7], [7, 5], atol=1e-9)


def test_from_mujoco_converts_axes():
    mujoco = pytest.importorskip("mujoco")
    xml = """<mujoco><worldbody>
      <camera name="cam" pos="1 0 0.5" xyaxes="0 1 0 -0.447 0 0.894" fovy="45"/>
    </worldbody></mujoco>"""
    m = mujoco.MjModel.from_xml_string(xml)
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    cam = CameraModel.from_mujoco(m, d, "cam", 48, 80)
    R = cam.T_world_camera[:3, :3]
    mj = d.cam_xmat[0].reshape(3, 3)
    np.testing.assert_allclose(R[:, 0], mj[:, 0])   # x right
    np.testing.assert_allclose(R[:, 1], -mj[:, 1])  # y down = -MuJoCo y (up)
    np.testing.assert_allclose(R[:, 2], -mj[:, 2])  # looks along MuJoCo -z
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert cam.fy == pytest.approx(24 / math.tan(math.radians(22.5)))
    assert (cam.width, cam.height, cam.cx, cam.cy) == (80, 48, 39.5, 23.5)


# --- action map ---------------------------------------------------------------------------


def _ee_pose(cam):
    """A point 0.9 m in front of the camera, end-effector axes = camera axes."""
    return cam.position + 0.9 * cam.T_world_camera[:3, 2], cam.T_world_camera[:3, :3].copy()


def test_action_map_markers_where_projected(cam):
    p, R = _ee_pose(cam)
    img = render_action_map(p, R, 1.0, cam)
    assert img.shape == (96, 160, 3) and img.dtype == np.uint8
    u, v = np.round(cam.project(p[None])[0][0]).astype(int)
    np.testing.assert_array_equal(img[v, u], [255, 255, 255])  # open gripper: white disc
    # The x axis runs right from the disc in red, the y axis down in green; z points at the camera.
    tip_u, tip_v = np.round(cam.project((p + AXIS_LENGTH_M * R[:, 0])[None])[0][0]).astype(int)
    assert tip_u > u + 5 and tip_v == v
    np.testing.assert_array_equal(img[v, tip_u - 1], [255, 0, 0])
    ty_u, ty_v = np.round(cam.project((p + AXIS_LENGTH_M * R[:, 1])[None])[0][0]).astype(int)
    np.testing.assert_array_equal(img[ty_v - 1, ty_u], [0, 255, 0])
    # Nothing far from the markers.
    assert not img[:, :u - 10].any() and not img[v + 20:].any()
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert colours <= {(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)}
    np.testing.assert_array_equal(img, render_action_map(p, R, 1.0, cam))  # deterministic


def test_action_map_gripper_encoding(cam):
    p, R = _ee_pose(cam)
    u, v = np.round(cam.project(p[None])[0][0]).astype(int)
    levels = [int(render_action_map(p, R, g, cam)[v, u, 0]) for g in (0.0, 0.5, 1.0)]
    assert levels == [64, 160, 255]


def test_action_map_black_when_behind_camera(cam):
    p, R = _ee_pose(cam)
    behind = cam.position - 0.5 * cam.T_world_camera[:3, 2]
    assert not render_action_map(behind, R, 1.0, cam).any()
    # In front but far outside the field of view: nothing drawn, no error.
    aside = cam.position + 0.2 * cam.T_world_camera[:3, 2] + 5.0 * cam.T_world_camera[:3, 0]
    assert not render_action_map(aside, R, 1.0, cam).any()
    # An axis pointing back through the camera plane is clipped, not wrapped around.
    near = cam.position + 0.03 * cam.T_world_camera[:3, 2]
    img = render_action_map(near, -R, 0.0, cam)  # z axis points towards the camera
    assert img.any()
