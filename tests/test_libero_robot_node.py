"""libero_robot_node (LIBERO as a hardware stand-in) over real DDS on loopback, against a probe
node that plays the policy side: camera, joint states, trajectories, gripper, reset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rosutil import kill, node_executable, ros_env, stop

pytestmark = [pytest.mark.ros, pytest.mark.libero]
pytest.importorskip("libero.libero")

PROBE = Path(__file__).parent / "probes" / "libero_robot_probe.py"
# Joint-space tolerance of the arm move (rad). The stand-in drives LIBERO's OSC_POSE controller,
# which servoes the end-effector pose and leaves the arm's redundant self-motion (joints 1 and 3
# against each other) to its nullspace posture, so joint targets are reached as far as the pose
# pins them down. The probe moves joints 2 and 4 (no self-motion component): measured final
# errors 0.6-1.1 mrad here, and up to 4.6 mrad for a 0.2/-0.2 rad move in test_standin (the
# nullspace pull); 0.01 rad leaves a 2x margin over the worst and is < 1 cm at the hand.
JOINT_TOL_RAD = 0.01
# End-effector tolerance: the OSC servo itself (measured 0.04-0.15 mm here, < 0.5 mm in test_standin).
EEF_TOL_M = 0.002


def test_libero_robot_node_over_dds(tmp_path, report):
    env = ros_env(tmp_path)
    cmd = [str(node_executable("world_env_libero", "libero_robot_node")), "--ros-args",
           "-p", "suite:=libero_object", "-p", "task_id:=0", "-p", "resolution:=128",
           "--log-level", "libero_robot:=debug"]
    node = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        probe = subprocess.run([sys.executable, str(PROBE), str(tmp_path), "70"],
                               env=env, capture_output=True, text=True, timeout=80)
        alive = node.poll() is None
        _, node_err = stop(node)
    finally:
        kill(node)
    node_log = "\n".join(line for line in node_err.splitlines() if "robosuite WARNING" not in line)
    diag = f"probe rc={probe.returncode}\n{probe.stderr[-3000:]}\nnode:\n{node_log[-4000:]}"
    assert probe.returncode == 0, diag
    assert alive, "libero_robot_node died\n" + diag
    assert node.returncode == 0 and "Traceback" not in node_err, diag
    result = json.loads((tmp_path / "result.json").read_text())

    # Camera as a camera driver: best effort, bgr8 128x128 upright frames, info with the same stamp.
    assert result["qos"] == {"camera/image_raw": [True], "camera/camera_info": [True], "joint_states": [True]}
    cam = result["camera"]
    assert (cam["encoding"], cam["width"], cam["height"], cam["step"], cam["bytes"]) == ("bgr8", 128, 128, 384,
                                                                                         128 * 384)
    assert cam["frame_id"] == cam["info_frame_id"] == "agentview_optical" and cam["info_size"] == [128, 128]
    assert cam["image_stamps_with_info"] >= cam["images"] - 1  # the last info may still be in flight
    assert cam["distinct_image_stamps"] == cam["images"]  # one frame per new state, never a repeat
    js = result["joint_state"]
    assert js["names"] == [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]
    assert js["positions"] == js["velocities"] == 9
    assert result["successes"] and not any(result["successes"])
    assert result["instruction"] == "pick up the alphabet soup and place it in the basket"

    # Malformed trajectories: logged with the reason, dropped (the arm did not move), node alive.
    for reason in ["non-finite position(s) for joint(s) ['panda_joint3']", "unknown joint name(s) ['elbow_joint']",
                   "point 0 has 6 positions for 7 joints", "trajectory has no points",
                   "time_from_start does not increase at point 1", "dropping gripper_controller trajectory: "
                   "unknown joint name(s) ['panda_joint1']"]:
        assert reason in node_err, reason
    assert result["after_malformed_max_motion"] < 0.005

    # The arm reached the target within tolerance; the end effector is where FK says.
    arm = result["arm"]
    target, final = np.array(arm["target"]), np.array(arm["final"])
    err = float(np.abs(final - target).max())
    from world_env_common.robot import PandaModel

    robot = PandaModel(base_pos=(-0.6, 0.0, 0.0))  # pose differences only: the base cancels
    (p, _), (pt, _) = robot.fk(final), robot.fk(target)
    moved = float(np.abs(target - np.array(arm["q0"])).max())
    report(f"libero_robot_node: joint error {err * 1e3:.1f} mrad after a {moved:.2f} rad move "
           f"(eef {np.linalg.norm(p - pt) * 1e3:.2f} mm); track (s, rad) "
           f"{[(round(t, 1), round(e, 3)) for t, e in arm['track'][::5]]}")
    assert err < JOINT_TOL_RAD, arm["track"]
    assert np.linalg.norm(p - pt) < EEF_TOL_M

    # The gripper closed on command; the reset re-opened it and answered with the instruction.
    assert result["gripper"]["before"] > 0.07 and result["gripper"]["after"] < 0.01, result["gripper"]
    assert result["reset"]["success"] and result["reset"]["message"] == result["instruction"]
    assert result["reset"]["opening"] > 0.07
    assert np.abs(np.array(result["reset"]["q"]) - target).max() > 0.1  # back at an init state
    rates = [line.split("]: ")[-1] for line in node_err.splitlines() if "achieved rates" in line]
    report("libero_robot_node: " + "; ".join(rates))


def test_libero_robot_node_config_errors_exit_2(tmp_path):
    env = ros_env(tmp_path)
    exe = str(node_executable("world_env_libero", "libero_robot_node"))
    for args, expected in [(["-p", "encoding:=mono8"], "encoding must be one of bgr8, rgb8"),
                           (["-p", "camera_rate_hz:=0"], "camera_rate_hz must be > 0"),
                           (["-p", "suite:=libero_100"], "unknown suite 'libero_100'"),
                           (["-p", "init_state_id:=50"], "init_state_id 50 out of range")]:
        proc = subprocess.Popen([exe, "--ros-args", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            kill(proc)
        assert proc.returncode == 2, err
        assert expected in err and "Traceback" not in err, err
