"""Tiny random artifacts saved the way the real stages save them: a policy, a world model, a
reflector and a start dataset whose states are our FK of its joints (as recorded ones are).
They build in about a second; tests and the graph-vs-in-process benchmark run on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 16  # the tiny world model's resolution
BASE = (-0.6, 0.0, 0.0)
Q0 = (0.0, -0.16, 0.0, -2.44, 0.0, 2.23, 0.79)
INSTRUCTIONS = ("pick up the soup", "pick up the milk", "open the drawer")


def write_start_states(path: Path, episodes: int = 3, steps: int = 4) -> None:
    """A dataset of ``episodes`` short episodes (16x16 frames) with consistent joints and states."""
    from world_env_common.camera import CameraModel, look_at
    from world_env_common.robot import PandaModel
    from world_env_training.data.dataset import DatasetWriter, Episode

    robot = PandaModel(np.array(BASE), np.array([1.0, 0.0, 0.0, 0.0]))
    camera = CameraModel.from_fovy(45.0, SIZE, SIZE, look_at((0.6, 0.0, 1.4), (-0.1, 0.0, 0.9)))
    rng = np.random.default_rng(0)
    with DatasetWriter(path) as writer:
        for e in range(episodes):
            joints = np.stack([np.array(Q0) + 0.01 * (t + e) for t in range(steps + 1)])
            states = np.stack([robot.state_from_joints(q, [0.04, -0.04]) for q in joints]).astype(np.float32)
            writer.append(Episode(
                frames=rng.integers(0, 256, (steps + 1, SIZE, SIZE, 3), dtype=np.uint8),
                actions=rng.uniform(-0.5, 0.5, (steps, 7)).astype(np.float32), states=states,
                joint_positions=joints.astype(np.float32), success=np.zeros(steps + 1, np.uint8),
                instruction=INSTRUCTIONS[e % 3], suite="libero_object", task_id=e % 3, init_state_id=e,
                camera=camera.to_dict(), source="expert", seed=e))


def write_artifacts(root: Path, threshold: float = 0.5) -> dict[str, str]:
    """Save tiny models and a start dataset under ``root``; returns PostTrainConfig-style paths."""
    import torch

    from world_env_training.models.reflector import Reflector, ReflectorConfig
    from world_env_training.models.vla import VLAConfig, VLAPolicy
    from world_env_training.models.world_model import WorldModel, WorldModelConfig

    root = Path(root)
    torch.manual_seed(0)
    VLAPolicy(VLAConfig.tiny()).save_pretrained(root / "policy")
    WorldModel(WorldModelConfig.tiny()).save_pretrained(root / "world_model")
    Reflector(ReflectorConfig.tiny(threshold=threshold)).save_pretrained(root / "reflector")
    write_start_states(root / "demos")
    return {"policy": str(root / "policy"), "world_model": str(root / "world_model"),
            "reflector": str(root / "reflector"), "demos": str(root / "demos")}
