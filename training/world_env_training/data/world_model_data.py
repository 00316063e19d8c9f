"""The world model's episodes: which are held out, and each loaded with its conditions.

``split_episodes`` holds out, per (suite, task), the ``holdout_per_task`` demonstrations with the
largest init state ids and every other dataset's episodes from those init states, so that no
training episode starts where a held-out one does. ``load_episode`` reads an episode with the
commanded states (``PandaModel.commanded_state``), their action maps drawn with the episode's
camera, and the geometry features. ``train-world-model`` trains on these and
``evaluate-world-model`` scores on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from world_env_training.data.dataset import Dataset


def split_episodes(datasets: list[Dataset], holdout_per_task: int) -> tuple[list, list]:
    """(train, held_out) lists of (dataset index, episode index); see the module docstring."""
    demo_inits: dict[tuple, set] = {}
    for e in datasets[0].manifest["episodes"]:
        demo_inits.setdefault((e["suite"], e["task_id"]), set()).add(e["init_state_id"])
    held = {key: set(sorted(inits)[len(inits) - holdout_per_task:]) if holdout_per_task else set()
            for key, inits in demo_inits.items()}
    train, held_out = [], []
    for d, dataset in enumerate(datasets):
        for e in dataset.manifest["episodes"]:
            is_held = e["init_state_id"] in held.get((e["suite"], e["task_id"]), set())
            (held_out if is_held else train).append((d, e["index"]))
    return train, held_out


@dataclass
class EpisodeArrays:
    """One episode with its precomputed conditions (``load_episode``)."""

    frames: np.ndarray        # (T+1, H, W, 3) uint8
    states: np.ndarray        # (T+1, 7)
    actions: np.ndarray       # (T, 7)
    commanded: np.ndarray     # (T, 7)
    action_maps: np.ndarray   # (T, H, W, 3) uint8
    geometry: np.ndarray      # (10, H, W), or (T+1, 10, H, W) with depth
    camera: object
    instruction: str
    key: str


def load_episode(dataset: Dataset, index: int, robot, resolution: int) -> EpisodeArrays:
    """Episode ``index`` with commanded states, action maps and geometry computed."""
    from world_env_common.camera import CameraModel
    from world_env_training.models.world_model.processor_world_model import action_maps, commanded_states, geometry_map

    entry = dataset.entry(index)
    keys = ["frames", "states", "actions"] + (["depth"] if "depth" in entry["arrays"] else [])
    arrays = dataset.load_arrays(index, keys)
    frames = arrays["frames"]
    path = dataset.path / entry["file"]
    if frames.shape[1:3] != (resolution, resolution):
        raise ValueError(f"{path}: frames are {frames.shape[2]}x{frames.shape[1]}, the model's resolution is {resolution}")
    camera_dict = json.loads(str(np.load(path, allow_pickle=False)["meta"]))["camera"]
    if not camera_dict:
        raise ValueError(f"{path}: no camera model in the episode metadata (needed for action maps)")
    camera = CameraModel.from_dict(camera_dict)
    commanded = commanded_states(robot, arrays["states"][:-1], arrays["actions"])
    if "depth" in arrays:
        geometry = np.stack([geometry_map(camera, d) for d in arrays["depth"]])
    else:
        geometry = geometry_map(camera)
    return EpisodeArrays(frames, arrays["states"], arrays["actions"], commanded,
                         action_maps(commanded, camera, robot.gripper_open_width), geometry, camera,
                         entry["instruction"], entry["key"])
