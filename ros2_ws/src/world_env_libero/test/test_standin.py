"""The stand-in core without ROS: trajectory validation and interpolation, the OSC conversion,
the camera budget, and StandIn driving a real LiberoEnv to joint targets."""

import numpy as np
import pytest

from world_env_libero.standin import (JointTrajectoryFollower, StandIn, TrajectoryError, camera_rate_budget,
                                      osc_action, validate_trajectory)

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
Q = np.array([0.0, -0.16, 0.0, -2.44, 0.0, 2.23, 0.79])  # robosuite's Panda home posture


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("names, points, match", [
    ([], [(1.0, [])], "names no joints"),
    (["a", "b", "a"], [(1.0, [0, 0, 0])], r"duplicate joint name\(s\) \['a'\]"),
    (["a", "x"], [(1.0, [0, 0])], r"unknown joint name\(s\) \['x'\]"),
    (["a", "b"], [], "no points"),
    (["a", "b"], [(1.0, [0.0])], "point 0 has 1 positions for 2 joints"),
    (["a", "b"], [(1.0, [0, 0]), (2.0, [0, np.nan])], r"point 1 has non-finite position\(s\) for joint\(s\) \['b'\]"),
    (["a", "b"], [(np.inf, [0, 0])], "point 0 has a non-finite time_from_start"),
    (["a", "b"], [(-0.5, [0, 0])], "point 0 has a negative time_from_start"),
    (["a", "b"], [(1.0, [0, 0]), (1.0, [1, 1])], "time_from_start does not increase at point 1"),
    (["a", "b"], [(1.0, [0, 0]), (2.0, [1, 1]), (1.5, [2, 2])], "time_from_start does not increase at point 2"),
])
def test_validate_trajectory_names_the_reason(names, points, match):
    with pytest.raises(TrajectoryError, match=match):
        validate_trajectory(names, points, known=["a", "b"])
    assert issubclass(TrajectoryError, ValueError)


def test_validate_trajectory_returns_arrays():
    names, times, positions = validate_trajectory(["b", "a"], [(0.5, [1, 2]), (1, (3, 4))], known=["a", "b"])
    assert names == ["b", "a"]
    np.testing.assert_array_equal(times, [0.5, 1.0])
    np.testing.assert_array_equal(positions, [[1, 2], [3, 4]])


# ---------------------------------------------------------------------- interpolation
def test_follower_interpolates_linearly_from_the_start_positions():
    f = JointTrajectoryFollower(["a", "b"], [(1.0, [1.0, -2.0]), (3.0, [3.0, 2.0])],
                                start_positions=[0.0, 0.0], start_time=10.0)
    np.testing.assert_allclose(f.sample(9.0), [0.0, 0.0])     # before the start: hold
    np.testing.assert_allclose(f.sample(10.5), [0.5, -1.0])   # halfway to the first point
    np.testing.assert_allclose(f.sample(11.0), [1.0, -2.0])
    np.testing.assert_allclose(f.sample(12.5), [2.5, 1.0])    # 3/4 of the second segment
    np.testing.assert_allclose(f.sample(20.0), [3.0, 2.0])    # after the end: hold the last point
    assert f.end_time == 13.0 and not f.done(12.9) and f.done(13.0)


def test_follower_first_point_at_zero_jumps_and_single_point_holds():
    f = JointTrajectoryFollower(["a"], [(0.0, [5.0]), (1.0, [6.0])], start_positions=[0.0])
    np.testing.assert_allclose(f.sample(0.0), [5.0])
    np.testing.assert_allclose(f.sample(0.25), [5.25])
    g = JointTrajectoryFollower(["a"], [(2.0, [4.0])])  # no start positions: the first point's
    np.testing.assert_allclose(g.sample(1.0), [4.0])
    with pytest.raises(TrajectoryError, match="start positions"):
        JointTrajectoryFollower(["a"], [(1.0, [1.0])], start_positions=[0.0, 0.0])


# ---------------------------------------------------------------------- OSC conversion
@pytest.fixture(scope="module")
def robot():
    pytest.importorskip("robosuite")
    from world_env_common.robot import PandaModel

    return PandaModel(base_pos=(-0.6, 0.0, 0.0))


def test_osc_action_points_at_the_target_pose(robot):
    from world_env_common.pose import axis_angle_to_matrix

    pos, rot = robot.fk(Q)
    np.testing.assert_array_equal(osc_action(robot, Q, None), np.zeros(7))  # no command: hold
    np.testing.assert_allclose(osc_action(robot, Q, Q), np.zeros(7), atol=1e-9)
    # 1 cm along +x and -z, 0.1 rad about world z: 0.2 and -0.2 of the 5 cm range, 0.2 of 0.5 rad.
    target = robot.ik(pos + [0.01, 0.0, -0.01], axis_angle_to_matrix([0, 0, 0.1]) @ rot, q_init=Q)
    assert target.success
    np.testing.assert_allclose(osc_action(robot, Q, target.q), [0.2, 0, -0.2, 0, 0, 0.2, 0], atol=1e-4)
    # Far targets saturate at the OSC limits.
    far = robot.ik(pos + [0.3, 0.0, 0.0], rot, q_init=Q)
    np.testing.assert_allclose(osc_action(robot, Q, far.q)[:3], [1, 0, 0], atol=1e-3)  # IK: 0.1 mm


def test_osc_action_gripper_threshold_is_half_open(robot):
    assert robot.gripper_open_width == pytest.approx(0.08)
    assert osc_action(robot, Q, None, 0.05)[6] == -1.0  # above half open: open
    assert osc_action(robot, Q, None, 0.03)[6] == 1.0   # below: close
    assert osc_action(robot, Q, None, 0.0)[6] == 1.0


def test_camera_rate_budget_keeps_the_control_loop_first():
    assert camera_rate_budget(0.008, 0.06, 20, 10) == 10  # 0.16 s + 0.6 s of each second: fits
    assert camera_rate_budget(0.015, 0.09, 20, 10) == pytest.approx((0.9 - 0.3) / 0.09)
    assert camera_rate_budget(0.05, 0.09, 20, 10) == 1.0  # no time left: still 1 frame/s
    assert camera_rate_budget(0.05, 0.09, 20, 0.5) == 0.5


# ---------------------------------------------------------------------- against LIBERO
@pytest.fixture(scope="module")
def standin():
    pytest.importorskip("libero.libero")
    from world_env_libero import LiberoEnv

    s = StandIn(LiberoEnv("libero_object", 0, resolution=64))
    yield s
    s.close()


def run(standin, seconds, t0=0.0, dt=0.05):
    """Step for ``seconds`` of control time from t0; returns the final time."""
    t = t0
    for _ in range(int(round(seconds / dt))):
        t += dt
        standin.step(t)
    return t


def eef_error(robot, q, q_target):
    from world_env_common.pose import rotation_angle

    (p, r), (pt, rt) = robot.fk(q), robot.fk(q_target)
    return float(np.linalg.norm(p - pt)), float(rotation_angle(r, rt))


def test_standin_reaches_a_joint_target(standin):
    """Joints 2 and 4 (no self-motion component) over 1 s: the joints converge, and so does the
    end effector. Measured: ~5 mrad, < 0.5 mm after 1 s of settling."""
    q0 = standin.reset(0)["joint_positions"].copy()
    target = q0 + [0.0, 0.2, 0.0, -0.2, 0.0, 0.0, 0.0]
    order = [6, 0, 3, 1, 5, 2, 4]  # any joint order
    assert standin.set_arm_trajectory([ARM[i] for i in order], [(1.0, target[order])], 0.0) == []
    run(standin, 0.5)
    half = standin.joint_positions.copy()
    run(standin, 1.5, 0.5)
    q = standin.joint_positions
    assert np.abs(half - q0).max() > 0.05  # under way at half time
    assert np.abs(q - target).max() < 0.01, q - target
    pos_err, rot_err = eef_error(standin.robot, q, target)
    assert pos_err < 1e-3 and rot_err < np.radians(0.2)


def test_standin_tracks_the_pose_not_the_self_motion(standin):
    """Joints 1 and 3 together: the pose converges; the redundant elbow self-motion stays with
    LIBERO's OSC nullspace posture (robosuite's controller, unchanged), so joints may not."""
    q0 = standin.reset(0)["joint_positions"].copy()
    target = q0 + [0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    standin.set_arm_trajectory(ARM, [(1.0, target)], 0.0)
    run(standin, 2.5)
    pos_err, rot_err = eef_error(standin.robot, standin.joint_positions, target)
    assert pos_err < 1e-3 and rot_err < np.radians(0.2)


def test_standin_holds_without_a_command_and_clamps(standin):
    q0 = standin.reset(0)["joint_positions"].copy()
    run(standin, 1.0)
    assert np.abs(standin.joint_positions - q0).max() < 0.005
    beyond = q0.copy()
    beyond[3] = 0.5  # joint 4's upper limit is -0.0698
    notes = standin.set_arm_trajectory(ARM, [(1.0, beyond)], 1.0)
    assert notes == ["arm targets outside the joint limits clamped for joint(s) ['panda_joint4']"]
    assert standin.commands.arm.positions[-1][3] == pytest.approx(standin.robot.upper[3])
    with pytest.raises(TrajectoryError, match=r"lacks joint\(s\) \['panda_joint7'\]"):
        standin.set_arm_trajectory(ARM[:6], [(1.0, q0[:6])], 1.0)
    with pytest.raises(TrajectoryError, match="unknown"):
        standin.set_gripper_trajectory(["panda_joint1"], [(1.0, [0.0])], 1.0)


def test_standin_gripper_closes_and_opens(standin):
    obs = standin.reset(0)
    assert standin.robot.gripper_width(obs["finger_positions"]) > 0.07
    standin.set_gripper_trajectory(FINGERS, [(0.5, [0.0, 0.0])], 0.0)
    t = run(standin, 1.0)
    assert standin.robot.gripper_width(standin.finger_positions) < 0.01
    # One finger named is enough; an arm trajectory naming the fingers commands them too.
    q = standin.joint_positions.copy()
    notes = standin.set_arm_trajectory(ARM + [FINGERS[0]], [(0.5, [*q, 0.05])], t)
    assert notes == ["finger targets outside [0, 0.04] (joint1) / [-0.04, 0] (joint2) clamped"]
    run(standin, 1.0, t)
    assert standin.robot.gripper_width(standin.finger_positions) > 0.07


def test_step_without_render_then_render_matches_step_with_render(standin):
    env, action = standin.env, [0.3, 0.0, -0.2, 0.0, 0.0, 0.1, 1.0]
    env.reset(2, settle_steps=2)
    with_image, _ = env.step(action)
    env.reset(2, settle_steps=2)
    without, success = env.step(action, render=False)
    assert set(without) == {"state", "joint_positions", "finger_positions"} and success is False
    np.testing.assert_array_equal(env.render(), with_image["image"])
    np.testing.assert_array_equal(without["state"], with_image["state"])
