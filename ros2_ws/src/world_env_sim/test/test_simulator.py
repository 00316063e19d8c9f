"""WorldSimulator without ROS: a real frame and joint state start an episode, trajectories are
followed with joint_trajectory_controller semantics, the world model predicts each frame."""

import numpy as np
import pytest
import torch

from world_env_common.camera import CameraModel, look_at
from world_env_common.robot import PandaModel
from world_env_sim.simulator import TrajectoryError, WorldSimulator

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
Q0 = np.array([0.0, -0.16, 0.0, -2.44, 0.0, 2.23, 0.79])


@pytest.fixture
def sim():
    from world_env_training.models.world_model import WorldModel, WorldModelConfig

    torch.manual_seed(0)
    robot = PandaModel(np.array([-0.6, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0]))
    camera = CameraModel.from_fovy(45.0, 48, 48, look_at((0.6, 0.0, 1.4), (-0.1, 0.0, 0.9)))
    return WorldSimulator(WorldModel(WorldModelConfig.tiny()), camera, robot, ARM, FINGERS)


def test_an_episode_follows_the_commanded_trajectory(sim):
    frame = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    sim.reset(frame, Q0, [0.04, -0.04], "pick up the soup")
    assert sim.frame.shape == (16, 16, 3)  # resized to the model's resolution
    np.testing.assert_allclose(sim.env.states[0], sim.robot.state_from_joints(Q0, [0.04, -0.04]), atol=1e-6)
    target = Q0 + 0.1
    sim.set_arm_trajectory(ARM, [(0.1, target)], start_time=0.0)
    sim.set_gripper_trajectory(FINGERS, [(0.1, [0.0, 0.0])], start_time=0.0)
    halfway = sim.step(0.05)
    np.testing.assert_allclose(halfway["arm"], Q0 + 0.05, atol=1e-9)  # linear interpolation, as JTC
    out = sim.step(0.1)
    np.testing.assert_allclose(out["arm"], target, atol=1e-9)
    np.testing.assert_allclose(out["commanded"][:3], sim.robot.fk(target)[0], atol=1e-6)
    assert out["frame"].shape == (16, 16, 3) and out["action_map"].shape == (16, 16, 3)
    assert 0.0 <= out["fingers"][0] < 0.04  # closing at the gripper's rate, not at once
    assert sim.steps == 2


def test_bad_commands_are_refused_with_the_reason(sim):
    with pytest.raises(TrajectoryError, match="reset"):
        sim.set_arm_trajectory(ARM, [(0.1, Q0)], 0.0)
    sim.reset(np.zeros((16, 16, 3), np.uint8), Q0, [0.04, -0.04], "x")
    with pytest.raises(TrajectoryError, match="lacks joint"):
        sim.set_arm_trajectory(ARM[:6], [(0.1, Q0[:6])], 0.0)
    with pytest.raises(TrajectoryError, match="non-finite"):
        sim.set_arm_trajectory(ARM, [(0.1, [np.nan, *Q0[1:]])], 0.0)
    notes = sim.set_arm_trajectory(ARM, [(0.1, Q0 + [5.0, 0, 0, 0, 0, 0, 0])], 0.0)
    assert "clamped" in notes[0]
    with pytest.raises(ValueError, match="empty instruction"):
        sim.reset(np.zeros((16, 16, 3), np.uint8), Q0, [0.04, -0.04], " ")


def test_precision_option_runs_the_world_model_in_bf16():
    """precision=bf16 changes the predicted frame only by bf16 rounding: the same seed gives a
    different frame from fp32's (bf16 ran), within a few grey levels of it."""
    from world_env_training.models.world_model import WorldModel, WorldModelConfig, WorldModelProcessor

    robot = PandaModel(np.array([-0.6, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0]))
    camera = CameraModel.from_fovy(45.0, 16, 16, look_at((0.6, 0.0, 1.4), (-0.1, 0.0, 0.9)))
    frame = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    frames = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = WorldModel(WorldModelConfig.tiny(), WorldModelProcessor(residual_std=0.05))
        sim = WorldSimulator(model, camera, robot, ARM, FINGERS, precision=precision)
        sim.reset(frame, Q0, [0.04, -0.04], "pick up the soup")
        frames[precision] = sim.step(0.05)["frame"].astype(int)
    diff = np.abs(frames["bf16"] - frames["fp32"])
    assert 0 < diff.max() <= 4
    with pytest.raises(ValueError, match="precision='fp16'"):
        WorldSimulator(WorldModel(WorldModelConfig.tiny()), camera, robot, ARM, FINGERS, precision="fp16")
