"""world_simulator_node over real DDS: reset from a real frame (and from a dataset), commands in as
a joint_trajectory_controller takes them, camera + joint states + /clock + inspection topics out,
bad input refused with a reason, node alive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from world_env_training.tiny import write_start_states
from rosutil import kill, node_executable, ros_env, stop
from world_env_common.camera import CameraModel, look_at
from world_env_common.rig import Rig
from world_env_common.robot import PandaModel

PROBES = Path(__file__).parent / "probes"
BASE_POS, BASE_QUAT = np.array([-0.66, 0.0, 0.912]), np.array([1.0, 0.0, 0.0, 0.0])
Q0 = [0.0, -0.16, 0.0, -2.44, 0.0, 2.23, 0.79]
TARGET = [0.1, -0.1, 0.05, -2.3, 0.0, 2.2, 0.8]


def tiny_world_model(path: Path) -> str:
    """A random tiny world model folder (16x16 frames; builds in about a second)."""
    import torch

    from world_env_training.models.world_model import WorldModel, WorldModelConfig

    torch.manual_seed(0)
    WorldModel(WorldModelConfig.tiny()).save_pretrained(path)
    return str(path)


def write_rig(path: Path) -> Path:
    eef, _ = PandaModel(BASE_POS, BASE_QUAT).fk(np.array(Q0))
    pose = look_at(eef + np.array([1.0, 0.25, 0.45]), eef)
    Rig(CameraModel.from_fovy(45.0, 64, 64, pose, name="sim_camera"), BASE_POS, BASE_QUAT).save(path)
    return path


@pytest.mark.ros
def test_simulator_node_stands_in_for_camera_and_arm(tmp_path):
    env = ros_env(tmp_path)
    write_start_states(tmp_path / "starts", episodes=2)
    cmd = [str(node_executable("world_env_sim", "world_simulator_node")), "--ros-args",
           "-p", f"world_model:={tiny_world_model(tmp_path / 'wm')}",
           "-p", f"rig_file:={write_rig(tmp_path / 'rig.yaml')}",
           "-p", f"start_dataset:={tmp_path / 'starts'}", "-p", "control_rate_hz:=20.0"]
    node = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        probe = subprocess.run([sys.executable, str(PROBES / "simulator_probe.py"), str(tmp_path), "120",
                                json.dumps({"q0": Q0, "target": TARGET})],
                               env=env, capture_output=True, text=True, timeout=180)
        alive = node.poll() is None
        _, log = stop(node)
    finally:
        kill(node)
    diag = f"probe rc={probe.returncode}\n{probe.stderr[-3000:]}\nnode:\n{log[-4000:]}"
    assert probe.returncode == 0, diag
    assert alive and node.returncode == 0 and "Traceback" not in log, diag
    r = json.loads((tmp_path / "result.json").read_text())

    # Nothing before the first reset; a frame that cannot be decoded is refused with the reason.
    assert all(v == 0 for k, v in r["before_reset"].items() if k != "instruction"), r["before_reset"]
    assert not r["bad_reset"]["success"] and "unsupported encoding '32FC1'" in r["bad_reset"]["message"]
    assert r["reset"]["success"] and r["reset"]["episode_id"] == "ep1"
    assert r["instruction"] == "put the red block away"
    # Frames as a camera driver sends them, at the model's resolution, with matching CameraInfo.
    assert r["first_image"] == {"width": 16, "height": 16, "encoding": "bgr8"}
    assert r["info"] == {"width": 16, "height": 16, "frame_id": "sim_camera_optical"}
    np.testing.assert_allclose(r["q_start"], Q0, atol=1e-9)
    # The commanded joints are reached (the NaN trajectory was dropped, not followed); the gripper
    # closes at its rate.
    np.testing.assert_allclose(r["q_end"], TARGET, atol=1e-9)
    assert r["fingers_end"][0] < 0.04 and r["fingers_end"][0] == pytest.approx(-r["fingers_end"][1])
    assert log.count("non-finite position") == 1, log[-3000:]
    # Sim time: one control period per step, the frames stamped with it.
    clock = np.array(r["clock"])
    steps = np.diff(clock)
    assert np.all(steps >= 0) and np.allclose(steps[steps > 0], 0.05, atol=1e-6), clock[:10]
    # /clock and the images are best-effort: a loaded machine may drop some of either, so the
    # frames are checked to lie on the sim-time grid and mostly match a received clock tick.
    image_stamps = np.array(r["image_stamps"])
    np.testing.assert_allclose(image_stamps / 0.05, np.round(image_stamps / 0.05), atol=1e-4)
    assert np.isin(np.round(image_stamps, 6), np.round(clock, 6)).mean() >= 0.5, (image_stamps, clock)
    counts = r["counts"]
    assert counts["predicted"] >= counts["action_map"] >= 8
    # An empty-frame reset takes the start dataset's next episode.
    assert r["dataset_reset"]["success"] and r["dataset_instruction"] == "pick up the soup"
    assert r["status"]["episode_id"] == "ep1" and r["status"]["predict_ms_mean"] > 0
