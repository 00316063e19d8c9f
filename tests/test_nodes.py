"""Node processes over real DDS on loopback: the action-map node against a probe node, and
every installed node entry point starting and stopping cleanly on SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rosutil import installed_executables, kill, node_executable, ros_env, stop
from world_env_common.action_map import gripper_grey_level
from world_env_common.camera import CameraModel, look_at
from world_env_common.rig import Rig
from world_env_common.robot import PandaModel

pytestmark = pytest.mark.ros

PROBE = Path(__file__).parent / "probes" / "action_map_probe.py"
BASE_POS, BASE_QUAT = np.array([-0.6, 0.0, 0.9]), np.array([1.0, 0.0, 0.0, 0.0])
Q = np.array([0.1, -0.3, 0.05, -2.3, 0.1, 2.0, 0.8])
FINGERS = np.array([0.02, -0.02])  # 0.04 m of 0.08: half open


@pytest.fixture
def rig(tmp_path):
    eef, _ = PandaModel(BASE_POS, BASE_QUAT).fk(Q)
    # Aim slightly off the end effector so its marker is away from the principal point.
    pose = look_at(eef + np.array([1.0, 0.25, 0.45]), eef + np.array([0.0, 0.06, 0.03]))
    rig = Rig(CameraModel.from_fovy(45.0, 128, 128, pose, name="test_camera"), BASE_POS, BASE_QUAT)
    rig.save(tmp_path / "rig.yaml")
    return rig, tmp_path / "rig.yaml"


def start_node(package, executable, env, *ros_args):
    cmd = [str(node_executable(package, executable))]
    if ros_args:
        cmd += ["--ros-args", *ros_args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_action_map_node_answers_joint_states_over_dds(rig, tmp_path):
    rig, rig_file = rig
    env = ros_env(tmp_path)
    node = start_node("world_env_sim", "action_map_node", env, "-p", f"rig_file:={rig_file}")
    spec = {"names": [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"],
            "positions": [*Q.tolist(), *FINGERS.tolist()], "sec": 1234}
    try:
        probe = subprocess.run([sys.executable, str(PROBE), str(tmp_path), json.dumps(spec), "30"],
                               env=env, capture_output=True, text=True, timeout=60)
        assert node.poll() is None, "action_map_node died"
        node_out, node_err = stop(node)
    finally:
        kill(node)
    diag = f"probe rc={probe.returncode}\n{probe.stderr[-3000:]}\nnode:\n{node_err[-3000:]}"
    assert probe.returncode == 0, diag
    assert node.returncode == 0, diag

    image = np.load(tmp_path / "image.npy")
    info = json.loads((tmp_path / "info.json").read_text())
    assert image.shape == (128, 128, 3)
    assert info["encoding"] == "rgb8" and info["frame_id"] == "test_camera_optical"
    assert np.allclose(info["k"], rig.camera.K.ravel())

    # The disc (the only grey pixels) sits where the camera model projects our FK.
    eef, _ = PandaModel(BASE_POS, BASE_QUAT).fk(Q)
    (u, v), = rig.camera.project(eef[None])[0]
    grey = gripper_grey_level(0.5)
    rows, cols = np.nonzero(np.all(image == grey, axis=2))
    assert len(rows) > 10, "no gripper disc in the action map"
    assert abs(cols.mean() - u) < 0.5 and abs(rows.mean() - v) < 0.5, (cols.mean(), rows.mean(), u, v)
    assert image[int(round(v)), int(round(u))].tolist() == [grey] * 3

    # Malformed joint states were dropped with a reason, and the node kept answering.
    assert json.loads((tmp_path / "result.json").read_text())["stamps"] == [1234]
    assert "non-finite position for joint(s) ['panda_joint3']" in node_err
    assert "missing joint(s) ['panda_joint1']" in node_err


def test_action_map_node_without_rig_fails_naming_the_problem(tmp_path):
    env = ros_env(tmp_path)
    for args, expected in [((), "rig_file is required"),
                           (("-p", f"rig_file:={tmp_path / 'none.yaml'}"), "cannot read rig file")]:
        proc = start_node("world_env_sim", "action_map_node", env, *args)
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            kill(proc)
        assert proc.returncode == 2, err
        assert expected in err
        assert "Traceback" not in err


# Every node executable, the arguments it needs, and a line its log prints once it is up.
# A new executable must be added here, so that it too is started and stopped in CI.
def _trainer_args(rig_file):
    """A tiny policy and start dataset next to the rig file, for the LOOP trainer."""
    from world_env_training.tiny import write_artifacts

    paths = write_artifacts(rig_file.parent / "loop_artifacts")
    return ["-p", f"policy:={paths['policy']}", "-p", f"start_dataset:={paths['demos']}",
            "-p", f"output_dir:={rig_file.parent / 'loop_ros'}"]


NODE_STARTS = {
    ("world_env_sim", "action_map_node"): (lambda rig_file: ["-p", f"rig_file:={rig_file}"], "rendering"),
    ("world_env_sim", "world_simulator_node"): (  # a tiny random world model saved next to the rig file
        lambda rig_file: ["-p", f"rig_file:={rig_file}", "-p", "world_model:=" + __import__(
            "test_world_simulator_node").tiny_world_model(rig_file.parent / "world_model")], "world simulator ready"),
    ("world_env_libero", "libero_robot_node"): (
        lambda rig_file: ["-p", "suite:=libero_object", "-p", "task_id:=0", "-p", "resolution:=128"],
        "LIBERO stand-in ready"),
    ("world_env_policy", "policy_node"): (lambda rig_file: ["-p", "checkpoint:=zero"], "policy node ready"),
    ("world_env_policy", "loop_trainer_node"): (_trainer_args, "LOOP trainer ready"),
    ("world_env_bringup", "bag_recorder_node"): (lambda rig_file: ["-p", f"output:={rig_file.parent / 'bag'}"],
                                                 "recording 8 topics"),
    ("world_env_reflector", "reflector_node"): (  # a tiny random reflector saved next to the rig file
        lambda rig_file: ["-p", "checkpoint:=" + __import__("test_reflector_node").tiny_reflector(
            rig_file.parent / "reflector")], "reflector node ready"),
}


def test_every_node_entry_point_is_covered():
    assert set(installed_executables()) == set(NODE_STARTS)


@pytest.mark.parametrize("package, executable", sorted(NODE_STARTS))
def test_node_starts_and_stops_cleanly_on_sigint(package, executable, rig, tmp_path):
    _, rig_file = rig
    make_args, ready_line = NODE_STARTS[(package, executable)]
    proc = start_node(package, executable, ros_env(tmp_path), *make_args(rig_file))
    try:
        # Wait for the ready line on stderr (rclpy logs there), bounded.
        deadline, seen = time.monotonic() + 120, ""  # torch, LIBERO and models load first
        while ready_line not in seen and time.monotonic() < deadline and proc.poll() is None:
            seen += proc.stderr.readline()
        assert ready_line in seen, f"{executable} did not come up:\n{seen}"
        start = time.monotonic()
        _, err = stop(proc, signal.SIGINT)
        took = time.monotonic() - start
    finally:
        kill(proc)
    assert proc.returncode == 0, f"{executable} exited {proc.returncode} on SIGINT:\n{err}"
    assert "Traceback" not in err
    assert took < 5.0, f"{executable} took {took:.1f} s to stop"
