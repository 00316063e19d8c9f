"""Inputs of the world model: condition building (numpy) and the tensor processor.

Condition building, shared by training, evaluation and the imagined environment so that all
three feed the model identically:

- ``commanded_states(robot, states, actions)``: (N, 7) commanded next states,
  ``PandaModel.commanded_state`` row by row.
- ``action_maps(states, camera, gripper_open_width, chains=None)``: (N, H, W, 3) uint8 action
  maps (``world_env_common.action_map``) of 7-D states, the gripper width mapped to an opening in
  [0, 1]; with (N, 8, 3) arm chains (``arm_chain``), the arm action map.
- ``reached_state(states, commanded, gripper_rate, gains)``: the state after one step towards a
  commanded one: the pose moved the fraction ``gains`` = (position, rotation) of the way (LIBERO's
  OSC controller covers about a quarter of a commanded position delta in one control step; the
  processor holds both, ``train-world-model`` fits them on its demonstrations with
  ``fit_arm_gains``), the gripper width by at most
  ``gripper_rate``; and ``chunk_commanded(robot, state, actions, gripper_rate, gains)``: a chunk
  of actions chained that way,
  giving the chunk's last commanded state and the state it ends in; a model with
  ``frame_stride`` k > 1 is conditioned on a chunk of k actions through these.
- ``arm_offset(robot, state, joints)`` and ``arm_chain(robot, state, joints_init, offset)``:
  the joint angles that reach a state's pose (IK started from ``joints_init``, the previous
  angles) and the arm's kinematic chain in the scene's world frame. ``PandaModel`` puts the
  robot base at the origin; a LIBERO scene translates it, and the offset between a recorded
  state's position and the forward kinematics of its recorded joints maps one onto the other.
- ``geometry_map(camera, depth=None)``: (10, H, W) float32 per-pixel geometry: the Pluecker
  ray of each pixel in the world frame (direction d, 3 channels; moment o x d, 3 channels,
  o = camera centre), then the world point map from depth (3 channels, metres) and its
  validity mask (1 channel), both zero where there is no depth.

``WorldModelProcessor`` turns those arrays into the model's batch of tensors: frames to [-1, 1]
(B, C, H, W); states normalised with the training data's mean and standard deviation; and the
standard deviation of the training frame changes o_{t+1} - o_t, by which a residual model
divides what it diffuses (for a latent model, that of the latent changes z_{t+1} - z_t, and the
latents' own standard deviation, the unit of its history noise). The statistics are saved with
the model (``processor.json``). Batch keys are the constants below.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from world_env_common.action_map import render_action_map, render_arm_map
from world_env_common.camera import CameraModel
from world_env_common.pose import axis_angle_to_matrix, axis_angle_to_quat, quat_multiply, quat_to_axis_angle

PROCESSOR_NAME = "processor.json"

# Batch keys
HISTORY = "history"          # (B, K, 3, H, W) memory-bank frames in [-1, 1], slot 0 = o_t
ACTION_MAP = "action_map"    # (B, 3, H, W) action map of the commanded next state, [-1, 1]
STATE = "state"              # (B, 7) normalised s_t
COMMANDED = "commanded"      # (B, 7) normalised commanded next state
GEOMETRY = "geometry"        # (B, 10, H, W) geometry map
TARGET = "target"            # (B, 3, H, W) o_{t+1} in [-1, 1] (training only)
# Latent models only, optional (encoded from the frames above when absent):
LATENTS = "latents"          # (B, K, C, h, w) autoencoder latents of the history slots
TARGET_LATENT = "target_latent"  # (B, C, h, w) latent of o_{t+1} (training only)
DECODED = "decoded"          # (B, 3, H, W) the decoder's image of the slot-0 latent

GEOMETRY_CHANNELS = 10
#: Steps the gripper takes from closed to open in imagination (LIBERO's fingers take ~8 control
#: steps): ``ImaginedEnv``'s default, and the rate chunks are chained with in training data.
GRIPPER_STEPS = 8


def commanded_states(robot, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """(N, 7) commanded next states of (N, 7) states and (N, 7) actions."""
    return np.stack([robot.commanded_state(s, a) for s, a in zip(states, actions)]).astype(np.float32)


def action_maps(states: np.ndarray, camera: CameraModel, gripper_open_width: float,
                chains: np.ndarray | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 action maps of (N, 7) states in ``camera``'s resolution; with (N, n, 3)
    world-frame arm chains, arm action maps."""
    out = np.empty((len(states), camera.height, camera.width, 3), np.uint8)
    for i, s in enumerate(states):
        opening = float(np.clip(s[6] / gripper_open_width, 0.0, 1.0))
        if chains is None:
            out[i] = render_action_map(s[:3], axis_angle_to_matrix(s[3:6]), opening, camera)
        else:
            out[i] = render_arm_map(chains[i], s[:3], axis_angle_to_matrix(s[3:6]), opening, camera)
    return out


def reached_state(states: np.ndarray, commanded: np.ndarray, gripper_rate: float,
                  gains: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """(..., 7) states after a step from ``states`` towards ``commanded``: the position moved the
    fraction gains[0] of the way, the orientation gains[1] of the rotation between them (1: the
    commanded pose reached), the gripper width towards its target by at most ``gripper_rate`` (m)."""
    states = np.asarray(states, np.float32)
    nxt = np.array(commanded, np.float32)
    position_gain, rotation_gain = gains
    if position_gain != 1.0:
        nxt[..., :3] = states[..., :3] + position_gain * (nxt[..., :3] - states[..., :3])
    if rotation_gain != 1.0:
        delta = _rotation_between(states[..., 3:6], nxt[..., 3:6])
        # Composed as quaternions so the axis-angle keeps the state's sign convention (robosuite's).
        nxt[..., 3:6] = quat_to_axis_angle(quat_multiply(axis_angle_to_quat(rotation_gain * delta),
                                                         axis_angle_to_quat(states[..., 3:6])))
    nxt[..., 6] = states[..., 6] + np.clip(nxt[..., 6] - states[..., 6], -gripper_rate, gripper_rate)
    return nxt


def _rotation_between(from_aa: np.ndarray, to_aa: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vector (angle <= pi, world frame) taking rotation ``from_aa`` to ``to_aa``."""
    return (Rotation.from_rotvec(np.asarray(to_aa, float)) * Rotation.from_rotvec(np.asarray(from_aa, float)).inv()
            ).as_rotvec()


def chunk_commanded(robot, state: np.ndarray, actions: np.ndarray, gripper_rate: float,
                    gains: tuple[float, float] = (1.0, 1.0)):
    """A (k, 7) chunk of actions chained from a (7,) state (``reached_state`` per step): returns
    (the last commanded state (7,), the states after each step (k, 7))."""
    states, commanded = [], None
    for a in actions:
        commanded = robot.commanded_state(state, a).astype(np.float32)
        state = reached_state(state, commanded, gripper_rate, gains)
        states.append(state)
    return commanded, np.stack(states)


def fit_arm_gains(robot, episodes) -> tuple[float, float]:
    """(position gain, rotation gain): least-squares fractions of the commanded pose change that
    the recorded arm covers in one step, over (states (T+1, 7), actions (T, 7)) pairs; in
    [0.05, 1]. On the default demonstrations: 0.22-0.26 per position axis, 0.08 for rotation."""
    xp = yp = xr = yr = 0.0
    for states, actions in episodes:
        states = np.asarray(states, np.float64)
        commanded = np.stack([robot.commanded_state(s, a) for s, a in zip(states[:-1], actions)])
        cp, dp = commanded[:, :3] - states[:-1, :3], states[1:, :3] - states[:-1, :3]
        cr = _rotation_between(states[:-1, 3:6], commanded[:, 3:6])
        dr = _rotation_between(states[:-1, 3:6], states[1:, 3:6])
        xp, yp = xp + (cp * cp).sum(), yp + (cp * dp).sum()
        xr, yr = xr + (cr * cr).sum(), yr + (cr * dr).sum()
    gain = lambda x, y: float(np.clip(y / x, 0.05, 1.0)) if x > 0 else 1.0  # noqa: E731
    return gain(xp, yp), gain(xr, yr)


def arm_offset(robot, state: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(3,) translation from ``robot``'s world frame to the scene's: recorded state position minus
    the forward kinematics of the recorded joints."""
    return (np.asarray(state[:3], np.float64) - robot.fk(np.asarray(joints, np.float64))[0]).astype(np.float32)


def arm_chain(robot, state: np.ndarray, joints_init: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(joints (7,), chain (8, 3)) of a (7,) scene-frame state: its pose solved by IK from
    ``joints_init``, the chain placed in the scene."""
    s = np.asarray(state, np.float64)
    q = robot.ik(s[:3] - offset, axis_angle_to_matrix(s[3:6]), np.asarray(joints_init, np.float64), restarts=2).q
    return q.astype(np.float32), (robot.chain_points(q) + offset).astype(np.float32)


def geometry_map(camera: CameraModel, depth: np.ndarray | None = None) -> np.ndarray:
    """(10, H, W) float32 geometry of ``camera`` (module docstring); depth (H, W) metres or None."""
    d = camera.ray_directions()
    moment = np.cross(camera.position, d)
    points = np.zeros_like(d)
    valid = np.zeros(d.shape[:2] + (1,))
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float64)
        valid = (depth > 0)[..., None].astype(np.float64)
        points = camera.point_map(depth) * valid
    return np.concatenate([d, moment, points, valid], -1).transpose(2, 0, 1).astype(np.float32)


def frames_to_tensor(frames: np.ndarray, device=None) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]."""
    x = torch.as_tensor(np.ascontiguousarray(frames), device=device).float().div_(127.5).sub_(1.0)
    return x.movedim(-1, -3)


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] -> (..., H, W, 3) uint8 (rounded, clipped)."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


class WorldModelProcessor:
    """Raw arrays -> the model's batch (keys above). Holds the state statistics.

    Args:
        state_mean, state_std: (7,) statistics of the training states (std floored at 1e-3).
        residual_std: Standard deviation of the training frame changes o_{t+1} - o_t in [-1, 1]
            pixel units (floored at 1e-3). The default 2.0 (no data) maps any change into [-1, 1].
        latent_residual_std: Latent models: standard deviation of the training latent changes
            z_{t+1} - z_t (floored at 1e-3; ``fit_latents``).
        latent_std: Latent models: standard deviation of the training latents (``fit_latents``).
        position_gain, rotation_gain: Fractions of a commanded pose change the arm covers in one
            step (``fit_arm_gains``), with which imagination advances the state; 1 (no data, and
            models saved before they were fitted): the commanded pose is reached.
    """

    def __init__(self, state_mean=None, state_std=None, residual_std: float = 2.0, latent_residual_std: float = 1.0,
                 latent_std: float = 1.0, position_gain: float = 1.0, rotation_gain: float = 1.0):
        self.state_mean = np.zeros(7, np.float32) if state_mean is None else np.asarray(state_mean, np.float32)
        self.state_std = (np.ones(7, np.float32) if state_std is None
                          else np.maximum(np.asarray(state_std, np.float32), 1e-3))
        self.residual_std = max(float(residual_std), 1e-3)
        self.latent_residual_std = max(float(latent_residual_std), 1e-3)
        self.latent_std = max(float(latent_std), 1e-3)
        self.position_gain, self.rotation_gain = float(position_gain), float(rotation_gain)

    @property
    def gains(self) -> tuple[float, float]:
        return self.position_gain, self.rotation_gain

    def fit_latents(self, latents: list[np.ndarray]) -> "WorldModelProcessor":
        """Set the latent statistics from per-episode (T+1, C, h, w) latents; returns self."""
        changes = np.concatenate([np.diff(z, axis=0).ravel() for z in latents]).astype(np.float64)
        values = np.concatenate([z.ravel() for z in latents]).astype(np.float64)
        self.latent_residual_std = max(float(changes.std()) if changes.size else 1.0, 1e-3)
        self.latent_std = max(float(values.std()), 1e-3)
        return self

    @classmethod
    def fit(cls, states: np.ndarray, frames: list[np.ndarray] | None = None) -> "WorldModelProcessor":
        """Statistics of (N, 7) training states and, if given, of the frame changes within each
        (T+1, H, W, 3) uint8 episode of ``frames``."""
        if not frames:
            return cls(states.mean(0), states.std(0))
        # Accumulated per episode: the frames of a run do not fit in memory as float.
        n, total, squares = 0, 0.0, 0.0
        for f in frames:
            change = np.diff(f.astype(np.int16), axis=0).astype(np.float64) / 127.5
            n, total, squares = n + change.size, total + change.sum(), squares + np.square(change).sum()
        mean = total / max(n, 1)
        return cls(states.mean(0), states.std(0), float(np.sqrt(max(squares / max(n, 1) - mean ** 2, 0.0))))

    def normalise_states(self, states: np.ndarray, device=None) -> torch.Tensor:
        return torch.as_tensor((np.asarray(states, np.float32) - self.state_mean) / self.state_std, device=device)

    def __call__(self, history: np.ndarray, action_map: np.ndarray, state: np.ndarray, commanded: np.ndarray,
                 geometry: np.ndarray, target: np.ndarray | None = None, device=None) -> dict:
        """history (B, K, H, W, 3) uint8; action_map (B, H, W, 3) uint8; state, commanded (B, 7);
        geometry (B, 10, H, W) float32; target (B, H, W, 3) uint8 or None."""
        batch = {HISTORY: frames_to_tensor(history, device), ACTION_MAP: frames_to_tensor(action_map, device),
                 STATE: self.normalise_states(state, device), COMMANDED: self.normalise_states(commanded, device),
                 GEOMETRY: torch.as_tensor(np.ascontiguousarray(geometry), device=device).float()}
        if target is not None:
            batch[TARGET] = frames_to_tensor(target, device)
        return batch

    def to_dict(self) -> dict:
        return {"state_mean": self.state_mean.tolist(), "state_std": self.state_std.tolist(),
                "residual_std": self.residual_std, "latent_residual_std": self.latent_residual_std,
                "latent_std": self.latent_std, "position_gain": self.position_gain,
                "rotation_gain": self.rotation_gain}

    def save(self, folder: str | Path) -> None:
        (Path(folder) / PROCESSOR_NAME).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> "WorldModelProcessor":
        return cls(**json.loads((Path(folder) / PROCESSOR_NAME).read_text()))
