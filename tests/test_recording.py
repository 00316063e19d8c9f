"""Recording and the real-robot data path: a teleoperator (a probe sending trajectory commands)
drives the LIBERO hardware stand-in, the bag recorder writes the run to MCAP over real DDS, and
``world-env bag-to-dataset`` turns the bag into a training dataset that SFT reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rosutil import kill, node_executable, ros_env, stop

PROBES = Path(__file__).parent / "probes"
BASE = [-0.6, 0.0, 0.0]


def _start(package, executable, env, *args):
    return subprocess.Popen([str(node_executable(package, executable)), "--ros-args", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.ros
@pytest.mark.libero
def test_a_recorded_stand_in_run_becomes_a_training_dataset(tmp_path):
    env = ros_env(tmp_path)
    bag = tmp_path / "run_bag"
    robot = _start("world_env_libero", "libero_robot_node", env, "-p", "suite:=libero_object", "-p", "task_id:=0",
                   "-p", "resolution:=64", "-p", "control_rate_hz:=10.0", "-p", "camera_rate_hz:=10.0")
    recorder = _start("world_env_bringup", "bag_recorder_node", env, "-p", f"output:={bag}")
    procs = {"robot": robot, "recorder": recorder}
    logs = {}
    try:
        probe = subprocess.run([sys.executable, str(PROBES / "arm_commander_probe.py"), str(tmp_path), "150", "60"],
                               env=env, capture_output=True, text=True, timeout=220)
        for name in ("recorder", "robot"):  # the recorder first: the bag closes on SIGINT
            logs[name] = stop(procs[name])[1]
    finally:
        for p in procs.values():
            kill(p)
    diag = f"probe rc={probe.returncode}\n{probe.stderr[-2000:]}\n" + "\n".join(
        f"--- {k}:\n{v[-2000:]}" for k, v in logs.items())
    assert probe.returncode == 0, diag
    assert recorder.returncode == 0 and "bag " in logs["recorder"] and "closed" in logs["recorder"], diag

    from world_env_training.data.bag_dataset import run
    from world_env_training.configs import BagToDatasetConfig
    from world_env_training.data.dataset import Dataset

    assert run(BagToDatasetConfig(bag=str(bag), output_dir=str(tmp_path / "dataset"), base_position=BASE)) == 0
    dataset = Dataset(tmp_path / "dataset")
    assert len(dataset) == 1, [dataset.entry(i) for i in range(len(dataset))]
    episode = dataset[0]
    assert episode.source == "recorded" and episode.instruction  # LIBERO's instruction, from the latched topic
    # One frame per command at 10 Hz (60 commands), less what a loaded CPU makes the camera skip.
    assert episode.frames.shape[1:] == (64, 64, 3) and len(episode.actions) >= 25, episode.frames.shape
    # States are our FK of the recorded joints (base at BASE).
    from world_env_common.robot import PandaModel

    robot_model = PandaModel(np.array(BASE), np.array([1.0, 0.0, 0.0, 0.0]))
    for q, state in zip(episode.joint_positions[::10], episode.states[::10]):
        np.testing.assert_allclose(robot_model.fk(q.astype(float))[0], state[:3], atol=1e-5)
    # Actions point where the arm went: the commanded displacement and the recorded one agree
    # in direction wherever the end effector moved noticeably.
    moved = np.diff(episode.states[:, :3], axis=0)
    big = np.linalg.norm(moved, axis=1) > 2e-3
    assert big.sum() >= 5, np.linalg.norm(moved, axis=1)
    cosine = np.sum(moved[big] * episode.actions[big, :3], axis=1) / (
        np.linalg.norm(moved[big], axis=1) * np.linalg.norm(episode.actions[big, :3], axis=1) + 1e-12)
    assert np.mean(cosine > 0.5) > 0.8, cosine
    assert np.all(np.abs(episode.actions) <= 1.0)
    # SFT reads it like any other dataset.
    from world_env_training.train.train_sft import ChunkSamples

    assert len(ChunkSamples(dataset, 4)) == len(episode.actions)
