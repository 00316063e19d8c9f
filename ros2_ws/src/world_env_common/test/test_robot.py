"""PandaModel and pose helpers: kinematic round trips, IK limits and failure, state conventions.

No ROS, no LIBERO env (tests/test_robot_libero.py checks against the simulator itself).
"""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from world_env_common import pose
from world_env_common.robot import PandaModel

# LIBERO's Panda start configuration (libero_object task 0, init state 0) and its reported eef
# pose there, observed in the simulator with the base at (-0.6, 0, 0).
Q_LIBERO = np.array([-0.01723539, -0.13168156, -0.00551779, -2.45947659, 0.01130304, 2.22927339, 0.77834666])
EEF_POS_LIBERO = np.array([-0.15644375, -0.00879616, 0.24219255])
EEF_QUAT_LIBERO = np.array([0.9987129, -0.01122743, -0.04916638, -0.00540021])  # xyzw, w < 0


@pytest.fixture(scope="module")
def panda():
    return PandaModel(base_pos=(-0.6, 0.0, 0.0))


def _tilted_base():
    return PandaModel(base_pos=(0.1, -0.2, 0.4), base_quat_wxyz=pose.matrix_to_quat(
        Rotation.from_euler("z", 30, degrees=True).as_matrix(), order="wxyz"))


# ---------------------------------------------------------------- pose helpers
def test_quaternion_order_and_matrix_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        rot = Rotation.random(random_state=rng).as_matrix()
        q_xyzw = pose.matrix_to_quat(rot)
        q_wxyz = pose.matrix_to_quat(rot, order="wxyz")
        assert q_xyzw[3] >= 0
        np.testing.assert_allclose(pose.quat_xyzw_to_wxyz(q_xyzw), q_wxyz)
        np.testing.assert_allclose(pose.quat_wxyz_to_xyzw(q_wxyz), q_xyzw)
        np.testing.assert_allclose(pose.quat_to_matrix(q_xyzw), rot, atol=1e-12)
        np.testing.assert_allclose(pose.quat_to_matrix(q_wxyz, order="wxyz"), rot, atol=1e-12)
        np.testing.assert_allclose(pose.quat_to_matrix(-q_xyzw), rot, atol=1e-12)
    # A 90 degree turn about z: xyzw puts the scalar last.
    np.testing.assert_allclose(pose.quat_to_matrix([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]),
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    with pytest.raises(ValueError):
        pose.quat_to_matrix([0, 0, 0, 1], order="zyxw")


def test_axis_angle_helpers():
    rng = np.random.default_rng(1)
    for _ in range(50):
        aa = rng.normal(size=3)
        aa *= rng.uniform(0.0, np.pi - 1e-3) / np.linalg.norm(aa)
        rot = pose.axis_angle_to_matrix(aa)
        np.testing.assert_allclose(rot, Rotation.from_rotvec(aa).as_matrix(), atol=1e-12)
        np.testing.assert_allclose(pose.matrix_to_axis_angle(rot), aa, atol=1e-9)
        q = pose.axis_angle_to_quat(aa)
        np.testing.assert_allclose(pose.quat_to_axis_angle(q), aa, atol=1e-9)
        # The negated quaternion is the same rotation but robosuite's axis-angle of it is the
        # "long way round" vector, angle 2 pi - angle about -axis.
        long_way = pose.quat_to_axis_angle(-q)
        assert np.linalg.norm(long_way) == pytest.approx(2 * np.pi - np.linalg.norm(aa))
        np.testing.assert_allclose(pose.axis_angle_to_matrix(long_way), rot, atol=1e-9)
        np.testing.assert_allclose(pose.axis_angle_to_quat(long_way), -q, atol=1e-9)
    np.testing.assert_array_equal(pose.quat_to_axis_angle([0, 0, 0, 1.0]), np.zeros(3))
    np.testing.assert_array_equal(pose.axis_angle_to_quat(np.zeros(3)), [0, 0, 0, 1.0])


def test_quat_multiply_and_rotation_angle():
    rng = np.random.default_rng(2)
    a, b = Rotation.random(2, random_state=rng)
    prod = pose.quat_multiply(a.as_quat(), b.as_quat())
    np.testing.assert_allclose(pose.quat_to_matrix(prod), (a * b).as_matrix(), atol=1e-12)
    negated = pose.quat_multiply(-a.as_quat(), b.as_quat())
    assert pose.quat_multiply(a.as_quat(), b.as_quat())[3] == pytest.approx(-negated[3])
    rz = Rotation.from_euler("z", 0.3).as_matrix()
    assert pose.rotation_angle(np.eye(3), rz) == pytest.approx(0.3)
    assert pose.rotation_angle(rz, rz) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- model
def test_model_structure(panda):
    assert panda.nq == 7
    assert panda.joint_names == [f"panda_joint{i}" for i in range(1, 8)]
    assert panda.finger_joint_names == ["panda_finger_joint1", "panda_finger_joint2"]
    assert panda.mjcf_joint_names == [f"joint{i}" for i in range(1, 8)]
    # Radians, as robosuite compiles them (a degree-parsed MJCF would give ~0.05 rad ranges).
    np.testing.assert_allclose(panda.lower, [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
    np.testing.assert_allclose(panda.upper, [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
    assert panda.gripper_open_width == pytest.approx(0.08)
    np.testing.assert_allclose(panda.hand_to_grip_site_rot, Rotation.from_euler("z", -90, degrees=True).as_matrix(),
                               atol=1e-6)
    custom = PandaModel(joint_names=[f"j{i}" for i in range(7)], finger_joint_names=["f1", "f2"])
    assert custom.joint_names[0] == "j0" and custom.finger_joint_names == ["f1", "f2"]
    with pytest.raises(ValueError):
        PandaModel(joint_names=["a", "b"])


def test_fk_matches_libero_start_pose(panda):
    pos, rot = panda.fk(Q_LIBERO)
    np.testing.assert_allclose(pos, EEF_POS_LIBERO, atol=1e-6)
    assert pose.rotation_angle(rot, pose.quat_to_matrix(EEF_QUAT_LIBERO)) < 1e-6
    # Sign included: LIBERO's quaternion here has w < 0.
    np.testing.assert_allclose(panda.fk_quat(Q_LIBERO), EEF_QUAT_LIBERO, atol=1e-6)


def test_fk_quat_agrees_with_fk_and_base_pose():
    rng = np.random.default_rng(3)
    tilted = _tilted_base()
    at_origin = PandaModel()
    for _ in range(50):
        q = tilted.random_q(rng)
        pos, rot = tilted.fk(q)
        quat = tilted.fk_quat(q)
        assert np.linalg.norm(quat) == pytest.approx(1.0)
        assert pose.rotation_angle(rot, pose.quat_to_matrix(quat)) < 1e-9
        # The base pose is a rigid transform applied to the base-frame FK.
        pos0, rot0 = at_origin.fk(q)
        np.testing.assert_allclose(pos, tilted.base.rotation @ pos0 + tilted.base_pos, atol=1e-12)
        np.testing.assert_allclose(rot, tilted.base.rotation @ rot0, atol=1e-12)
    # The grip site is 0.097 m (+ 0.1065 m flange) along the hand's z axis from link7's origin.
    pos, rot = at_origin.fk(np.zeros(7))
    np.testing.assert_allclose(pos, [0.088, 0.0, 0.333 + 0.316 + 0.384 - 0.1065 - 0.097], atol=1e-9)


def test_ik_round_trip_random_configurations():
    model = _tilted_base()
    rng = np.random.default_rng(4)
    q_seed = Q_LIBERO
    for _ in range(100):
        q_true = model.random_q(rng)
        pos, rot = model.fk(q_true)
        res = model.ik(pos, rot, q_seed)
        assert res.success, res
        assert res.pos_err_m < 1e-4 and res.rot_err_rad < 1e-3
        assert np.all(res.q >= model.lower) and np.all(res.q <= model.upper)
        pos_ik, rot_ik = model.fk(res.q)
        assert np.linalg.norm(pos_ik - pos) < 1e-3
        assert pose.rotation_angle(rot_ik, rot) < 1e-3


def test_ik_from_far_seed_and_default_seed(panda):
    rng = np.random.default_rng(5)
    q_true = panda.random_q(rng)
    pos, rot = panda.fk(q_true)
    far_seed = np.where(q_true > 0.5 * (panda.lower + panda.upper), panda.lower, panda.upper)
    for seed in (far_seed, None):
        res = panda.ik(pos, rot, seed, pos_tol=1e-5, rot_tol=1e-4)
        assert res.success and res.pos_err_m < 1e-5 and res.rot_err_rad < 1e-4
        assert np.all(res.q >= panda.lower) and np.all(res.q <= panda.upper)


def test_ik_unreachable_target_fails(panda):
    base = panda.base_pos
    res = panda.ik(base + np.array([1.5, 0.0, 0.3]), np.eye(3), Q_LIBERO, restarts=2)
    assert not res.success
    assert res.pos_err_m > 0.3
    assert np.all(res.q >= panda.lower) and np.all(res.q <= panda.upper)
    # Within reach but with a tolerance no solver iterate meets in 1 iteration: reported, not hidden.
    pos, rot = panda.fk(panda.random_q(np.random.default_rng(7)))
    res = panda.ik(pos, rot, Q_LIBERO, max_iters=1, restarts=0)
    assert not res.success and res.pos_err_m > 1e-4


def test_state_joints_round_trip(panda):
    rng = np.random.default_rng(6)
    for _ in range(30):
        q = panda.random_q(rng)
        fingers = np.array([rng.uniform(0, 0.04), -rng.uniform(0, 0.04)])
        state = panda.state_from_joints(q, fingers)
        assert state.shape == (7,)
        np.testing.assert_allclose(state[:3], panda.fk(q)[0])
        np.testing.assert_allclose(state[3:6], pose.quat_to_axis_angle(panda.fk_quat(q)))
        assert state[6] == pytest.approx(fingers[0] - fingers[1])
        res = panda.joints_from_state(state, Q_LIBERO)
        assert res.success
        state2 = panda.state_from_joints(res.q, fingers)
        np.testing.assert_allclose(state2[:3], state[:3], atol=1e-4)
        assert pose.rotation_angle(pose.axis_angle_to_matrix(state2[3:6]), pose.axis_angle_to_matrix(state[3:6])) < 1e-3
    # LIBERO's start state: hand pointing down, quaternion w < 0 -> angle just above pi.
    s = panda.state_from_joints(Q_LIBERO, [0.020833, -0.020833])
    assert np.pi < np.linalg.norm(s[3:6]) < np.pi + 0.05
    assert s[6] == pytest.approx(0.041666)


def test_commanded_state(panda):
    state = panda.state_from_joints(Q_LIBERO, [0.02, -0.02])
    rot = pose.axis_angle_to_matrix(state[3:6])
    # Zero action: same pose, gripper unchanged.
    np.testing.assert_allclose(panda.commanded_state(state, np.zeros(7)), state)
    # Full-scale and clipped translation; gripper close -> 0, open -> 0.08.
    out = panda.commanded_state(state, [1.0, -0.5, 3.0, 0, 0, 0, 1.0])
    np.testing.assert_allclose(out[:3], state[:3] + [0.05, -0.025, 0.05])
    np.testing.assert_allclose(out[3:6], state[3:6])
    assert out[6] == 0.0
    assert panda.commanded_state(state, [0, 0, 0, 0, 0, 0, -0.2])[6] == pytest.approx(0.08)
    # Rotation: world-frame delta on the left, 0.5 rad per unit action.
    out = panda.commanded_state(state, [0, 0, 0, 0, 0, 1.0, 0])
    goal = pose.axis_angle_to_matrix(out[3:6])
    np.testing.assert_allclose(goal, Rotation.from_euler("z", 0.5).as_matrix() @ rot, atol=1e-9)
    assert not np.allclose(goal, rot @ Rotation.from_euler("z", 0.5).as_matrix(), atol=1e-3)
    # The sign convention carries over: a small delta keeps the angle near the state's (> pi).
    small = panda.commanded_state(state, [0, 0, 0, 0.01, 0, 0, 0])
    assert np.linalg.norm(small[3:6] - state[3:6]) < 0.02
