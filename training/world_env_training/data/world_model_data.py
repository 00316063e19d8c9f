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
    """One episode with its precomputed conditions (``load_episode``). T counts the model's steps:
    actions, or chunks of ``frame_stride`` actions."""

    frames: np.ndarray        # (T+1, H, W, 3) uint8
    states: np.ndarray        # (T+1, 7)
    actions: np.ndarray       # (T, 7), or (T, frame_stride, 7) chunks (the last one zero-padded)
    commanded: np.ndarray     # (T, 7)
    action_maps: np.ndarray   # (T, H, W, 3) uint8
    geometry: np.ndarray      # (10, H, W), or (T+1, 10, H, W) with depth
    camera: object
    instruction: str
    key: str


def load_episode(dataset: Dataset, index: int, robot, resolution: int, frame_stride: int = 1,
                 arm_map: bool = False, gains: tuple[float, float] = (1.0, 1.0)) -> EpisodeArrays:
    """Episode ``index`` with commanded states, action maps and geometry computed.

    With ``frame_stride`` k > 1 a step is a chunk of k actions (the last chunk may be shorter):
    the frames and states are every k-th recorded one (and the last), and a chunk's commanded
    state is its actions chained from the recorded state at its start (``chunk_commanded``,
    with the arm's tracking ``gains``), as ``ImaginedEnv`` chains them. ``arm_map``: the action
    maps draw the arm, its joints solved by IK from the recorded joints at the chunk's start."""
    from world_env_common.camera import CameraModel
    from world_env_training.models.world_model.processor_world_model import (
        GRIPPER_STEPS, action_maps, arm_chain, arm_offset, chunk_commanded, commanded_states, geometry_map,
    )

    entry = dataset.entry(index)
    keys = ["frames", "states", "actions"] + (["depth"] if "depth" in entry["arrays"] else [])
    keys += ["joint_positions"] if arm_map else []
    arrays = dataset.load_arrays(index, keys)
    frames = arrays["frames"]
    path = dataset.path / entry["file"]
    if frames.shape[1:3] != (resolution, resolution):
        raise ValueError(f"{path}: frames are {frames.shape[2]}x{frames.shape[1]}, "
                         f"the model's resolution is {resolution}")
    camera_dict = json.loads(str(np.load(path, allow_pickle=False)["meta"]))["camera"]
    if not camera_dict:
        raise ValueError(f"{path}: no camera model in the episode metadata (needed for action maps)")
    camera = CameraModel.from_dict(camera_dict)
    states, actions = arrays["states"], arrays["actions"]
    if frame_stride == 1:
        idx = np.arange(len(frames))
        commanded = commanded_states(robot, states[:-1], actions)
        chunks = actions
    else:
        idx = np.unique(np.append(np.arange(0, len(frames), frame_stride), len(frames) - 1))
        rate = robot.gripper_open_width / GRIPPER_STEPS
        commanded = np.stack([chunk_commanded(robot, states[a], actions[a:b], rate, gains)[0]
                              for a, b in zip(idx[:-1], idx[1:])])
        chunks = np.zeros((len(idx) - 1, frame_stride, actions.shape[1]), np.float32)
        for i, (a, b) in enumerate(zip(idx[:-1], idx[1:])):
            chunks[i, :b - a] = actions[a:b]
    chains = None
    if arm_map:
        q = arrays["joint_positions"]
        offset = arm_offset(robot, states[0], q[0])
        chains = np.stack([arm_chain(robot, c, q[a], offset)[1] for c, a in zip(commanded, idx[:-1])])
    if "depth" in arrays:
        geometry = np.stack([geometry_map(camera, d) for d in arrays["depth"][idx]])
    else:
        geometry = geometry_map(camera)
    return EpisodeArrays(frames[idx], states[idx], chunks, commanded,
                         action_maps(commanded, camera, robot.gripper_open_width, chains), geometry, camera,
                         entry["instruction"], entry["key"])


def load_model_episode(dataset: Dataset, index: int, robot, config, gains=(1.0, 1.0)) -> EpisodeArrays:
    """``load_episode`` with a ``WorldModelConfig``'s resolution, frame stride and action map."""
    return load_episode(dataset, index, robot, config.resolution, config.frame_stride, config.arm_map, gains)
