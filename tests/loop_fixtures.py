"""Tiny random artifacts for LOOP tests: a policy, a world model, a reflector and a start-state
dataset, saved the way the real stages save them (built in about a second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from world_env_common.camera import CameraModel, look_at

SIZE = 16  # the tiny world model's resolution


def write_start_states(path: Path, episodes: int = 3, steps: int = 4) -> None:
    from world_env_training.dataset import DatasetWriter, Episode

    camera = CameraModel.from_fovy(45.0, SIZE, SIZE, look_at((0.6, 0.0, 1.4), (-0.1, 0.0, 0.9)))
    rng = np.random.default_rng(0)
    with DatasetWriter(path) as writer:
        for e in range(episodes):
            states = np.tile(np.array([-0.2, 0.0, 1.1, np.pi, 0.0, 0.0, 0.08], np.float32), (steps + 1, 1))
            states[:, 0] += 0.02 * e
            writer.append(Episode(
                frames=rng.integers(0, 256, (steps + 1, SIZE, SIZE, 3), dtype=np.uint8),
                actions=rng.uniform(-0.5, 0.5, (steps, 7)).astype(np.float32), states=states,
                joint_positions=np.zeros((steps + 1, 7), np.float32), success=np.zeros(steps + 1, np.uint8),
                instruction=["pick up the soup", "pick up the milk", "open the drawer"][e % 3],
                suite="libero_object", task_id=e % 3, init_state_id=e, camera=camera.to_dict(), source="expert",
                seed=e))


def write_artifacts(root: Path, threshold: float = 0.5) -> dict[str, str]:
    """Save tiny models and a start-state dataset under ``root``; returns PostTrainConfig paths."""
    from world_env_training.reflector import Reflector, ReflectorConfig
    from world_env_training.vla import VLAConfig, VLAPolicy
    from world_env_training.world_model import WorldModel, WorldModelConfig

    torch.manual_seed(0)
    VLAPolicy(VLAConfig.tiny()).save_pretrained(root / "policy")
    WorldModel(WorldModelConfig.tiny()).save_pretrained(root / "world_model")
    Reflector(ReflectorConfig.tiny(threshold=threshold)).save_pretrained(root / "reflector")
    write_start_states(root / "demos")
    return {"policy": str(root / "policy"), "world_model": str(root / "world_model"),
            "reflector": str(root / "reflector"), "demos": str(root / "demos")}
