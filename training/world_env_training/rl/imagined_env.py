"""The imagined environment: LIBERO's role played by the world model, ROS-free and batched.

``ImaginedEnv`` runs B episodes in lockstep on one device (LOOP rolls its N rollouts per
initial state out in it; the simulator ROS node wraps the same class).

One step, per rollout b, from (o_t, s_t) and action a_t:

1. The commanded next state c = ``robot.commanded_state(s_t, a_t)`` (OSC delta-pose target,
   gripper target width 0 or open).
2. The world model predicts o_{t+1} from the memory-bank frames, the action map of c drawn with
   ``camera``, and the tokens of o_t, s_t and c (``predict_next_frames``); the frame joins the
   memory bank.
3. The next state: the pose moves towards c's by the fractions the world model's processor
   fitted on its training data (``WorldModelProcessor.position_gain`` / ``rotation_gain``:
   LIBERO's controller covers about a quarter of a commanded position delta per step; 1, the
   commanded pose reached within the step, for models saved before the gains), or, with
   ``arm_physics`` (``ArmPhysics``), by the robot's own controller and dynamics stepped without
   the scene's movable objects. Gripper:
   the width moves towards c's width by at most ``gripper_open_width / gripper_steps`` per
   step (LIBERO's fingers take ~8 control steps to open or close), so it converges to the
   commanded width rather than jumping (``gripper_steps=0``: jump); with ``arm_physics``, as
   its fingers move.

A chunk-level model (``WorldModelConfig.frame_stride`` k > 1) predicts once per chunk: ``step``
takes (B, j, 7) chunks with j <= k, chains the j actions as above (``chunk_commanded``) and
predicts the frame after them from the last commanded state; the chunk's earlier steps keep the
previous frame in "images" (the newest frame the episode has). An arm action map
(``WorldModelConfig.arm_map``) needs the arm's joints at reset (``joints0``); they then follow
the commanded poses by IK (``arm_chain``).

A latent world model (``WorldModelConfig.latent``) keeps a second memory bank of latents beside
the frames: the predicted latent z_{t+1} joins it directly and D(z_{t+1}) is kept for the next
step, so a step costs one decoder call and no encoder call (frames are encoded only at reset).

Observations: {"image": (B, H, W, 3) uint8, "state": (B, 7) float32, "instruction": list[str],
"t": frames predicted (chunks for a chunk-level model)}; ``step`` on an action chunk (B, k, 7)
executes the k actions in order and also returns "images" (B, k, H, W, 3) and "states" (B, k, 7),
one per executed action.

Cost accounting: ``seconds`` accumulates wall time per part of the steps taken,
"world_model" (the batch's tensors and the denoising, ``predict_next_frames``) and "conditions"
(commanded states, the arm physics' steps, action maps, memory-bank gathering); ``frames``
counts predicted frames.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from world_env_training.models.world_model.memory_bank import MemoryBank
from world_env_training.models.world_model.modeling_world_model import make_scheduler, predict_next
from world_env_training.models.world_model.processor_world_model import (
    DECODED, GRIPPER_STEPS, LATENTS, action_maps, arm_chain, arm_offset, chunk_commanded, commanded_states,
    frames_to_tensor, geometry_map, reached_state, tensor_to_frames,
)


class ImaginedEnv:
    """B world-model rollouts advancing together (see the module docstring).

    Args:
        world_model: a trained ``WorldModel`` (moved to ``device``, put in eval mode).
        robot: ``PandaModel`` (``commanded_state``, ``gripper_open_width``).
        camera: ``CameraModel`` of the frames, at the model's resolution.
        device: torch device the model runs on.
        sampler: ddim or dpmsolver (default: the model's config).
        sampler_steps: denoising steps per frame (default: the model's config).
        gripper_steps: steps the gripper takes from closed to open (0: instantaneous).
        seed: seed of the sampling noise.
        precision: fp32, bf16 autocast of the world model, or auto: bf16 where the device has
            bf16 instructions (``world_env_training.models.precision``).
        channels_last: run the U-Net in channels_last memory format (``WorldModel.use_channels_last``;
            this changes the model object, which may be shared).
        arm_physics: ``ArmPhysics`` that moves the imagined arm (and fingers) under the actions,
            instead of the world model's fitted tracking gains; it needs ``joints0`` at reset.
            What the world model is told is unchanged: the commanded poses it was trained with,
            chained from the state the physics reached.
    """

    def __init__(self, world_model, robot, camera, device="cpu", sampler: str | None = None,
                 sampler_steps: int | None = None, gripper_steps: int = GRIPPER_STEPS, seed: int = 0,
                 precision: str = "fp32", channels_last: bool = False, arm_physics=None):
        from world_env_training.models.precision import resolve_precision

        config = world_model.config
        if (camera.height, camera.width) != (config.resolution, config.resolution):
            raise ValueError(f"camera: {camera.width}x{camera.height}, the model predicts "
                             f"{config.resolution}x{config.resolution} frames (use camera.resized)")
        self.model = world_model.to(device).eval()
        if channels_last:
            self.model.use_channels_last()
        self.precision = resolve_precision(precision, device)
        self.seconds = {"world_model": 0.0, "conditions": 0.0}
        self.frames = 0
        self.robot, self.camera, self.device = robot, camera, torch.device(device)
        self.sampler = make_scheduler(config, sampler or config.sampler)
        self.sampler_steps = sampler_steps or config.sampler_steps
        self.gripper_rate = robot.gripper_open_width / gripper_steps if gripper_steps > 0 else np.inf
        self.memory = MemoryBank(config.memory_frames, config.memory_recent, config.memory_stride)
        self.latent = world_model.autoencoder is not None
        self.latent_memory = MemoryBank(config.memory_frames, config.memory_recent, config.memory_stride)
        self.decoded = None  # latent models: D(z_t) of the newest latents, (B, 3, H, W)
        self.geometry = geometry_map(camera)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.states = None
        self.stride, self.arm = config.frame_stride, config.arm_map
        self.joints = self.offsets = None  # arm maps: (B, 7) joint angles, (B, 3) base offsets
        self.physics = arm_physics
        self.action_maps = None  # of the last step, (B, H, W, 3) uint8: what the simulator node shows
        self.instructions: list[str] = []

    @property
    def batch_size(self) -> int:
        return 0 if self.states is None else len(self.states)

    def reset(self, frames0: np.ndarray, states0: np.ndarray, instructions, joints0: np.ndarray | None = None,
              init_state_ids=None) -> dict:
        """Start B episodes: frames0 (B, H, W, 3) uint8, states0 (B, 7), instructions (B strings
        or one for all); joints0 (B, 7) arm joint angles (needed by an arm action map);
        init_state_ids (B,) the LIBERO init states they began from (needed by arm physics with
        objects, ``ArmPhysics(objects=True)``)."""
        frames0, states0 = np.asarray(frames0), np.asarray(states0, np.float32)
        size = self.model.config.resolution
        if frames0.dtype != np.uint8 or frames0.ndim != 4 or frames0.shape[1:] != (size, size, 3):
            raise ValueError(f"frames0: {frames0.dtype} {frames0.shape}, expected uint8 (B, {size}, {size}, 3)")
        if states0.shape != (len(frames0), 7):
            raise ValueError(f"states0: shape {states0.shape}, expected ({len(frames0)}, 7)")
        if isinstance(instructions, str):
            instructions = [instructions] * len(frames0)
        if len(instructions) != len(frames0):
            raise ValueError(f"instructions: {len(instructions)} given for {len(frames0)} episodes")
        if self.arm or self.physics is not None:
            if joints0 is None:
                raise ValueError("joints0: the world model draws the arm (arm_map) or physics moves it (arm_physics), "
                                 "give the episodes' (B, 7) joint angles")
            joints0 = np.asarray(joints0, np.float32)
            if joints0.shape != (len(frames0), 7):
                raise ValueError(f"joints0: shape {joints0.shape}, expected ({len(frames0)}, 7)")
        if self.physics is not None:
            self.physics.reset(joints0, states0[:, 6], init_state_ids)
        if self.arm:
            self.joints = joints0.copy()
            self.offsets = np.stack([arm_offset(self.robot, s, q) for s, q in zip(states0, joints0)])
        self.memory.reset(frames0.copy())
        if self.latent:
            from world_env_training.models.precision import autocast

            with torch.no_grad(), autocast(self.device, self.precision):
                latents = self.model.encode(frames_to_tensor(frames0, self.device))
                self.decoded = self.model.decode(latents)
            self.latent_memory.reset(latents.cpu().numpy())
        self.states, self.instructions = states0.copy(), list(instructions)
        return self._obs()

    def keep(self, indices) -> None:
        """Go on with only the episodes ``indices`` (in that order), e.g. those not yet
        terminated: the others stop costing a prediction per step."""
        if self.states is None:
            raise RuntimeError("ImaginedEnv.keep before reset")
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or (len(indices) and (indices.min() < 0 or indices.max() >= self.batch_size)):
            raise ValueError(f"indices {indices.tolist()}: expected episode indices in 0..{self.batch_size - 1}")
        self.memory.frames = [f[indices] for f in self.memory.frames]
        if self.latent:
            self.latent_memory.frames = [z[indices] for z in self.latent_memory.frames]
            self.decoded = self.decoded[torch.as_tensor(indices, device=self.decoded.device)]
        self.states = self.states[indices]
        if self.physics is not None:
            self.physics.keep(indices)
        if self.arm:
            self.joints, self.offsets = self.joints[indices], self.offsets[indices]
        self.instructions = [self.instructions[i] for i in indices]

    def next_states(self, states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(commanded (B, 7), next states (B, 7)) of a step; see the module docstring."""
        commanded = commanded_states(self.robot, states, actions)
        return commanded, self._reached(states, commanded)

    def _reached(self, states: np.ndarray, commanded: np.ndarray) -> np.ndarray:
        """The state after a step towards ``commanded``: its pose, the gripper moved at its rate."""
        return reached_state(states, commanded, self.gripper_rate, self.model.processor.gains)

    def _step_one(self, actions: np.ndarray) -> None:
        t0 = time.perf_counter()
        commanded, nxt = self.next_states(self.states, actions)
        if self.physics is not None:
            nxt = self.physics.step(actions[:, None])[0][:, 0]
        self.seconds["conditions"] += time.perf_counter() - t0
        self._advance(commanded, nxt)

    @torch.no_grad()
    def _advance(self, commanded: np.ndarray, nxt: np.ndarray, joints: np.ndarray | None = None) -> None:
        b = len(commanded)
        t0 = time.perf_counter()
        chains = None
        if self.arm and joints is not None:  # the commanded joints themselves: no IK
            self.joints = np.asarray(joints, np.float32)
            chains = np.stack([self.robot.chain_points(q) + o for q, o in zip(self.joints, self.offsets)])
        elif self.arm:
            solved = [arm_chain(self.robot, c, q, o) for c, q, o in zip(commanded, self.joints, self.offsets)]
            self.joints = np.stack([q for q, _ in solved])
            chains = np.stack([c for _, c in solved])
        self.action_maps = action_maps(commanded, self.camera, self.robot.gripper_open_width, chains)
        history = self.memory.history()
        t1 = time.perf_counter()
        batch = self.model.processor(
            history=history, action_map=self.action_maps, state=self.states, commanded=commanded,
            geometry=np.broadcast_to(self.geometry, (b,) + self.geometry.shape), device=self.device)
        if self.latent:
            batch[LATENTS] = torch.as_tensor(self.latent_memory.history(), device=self.device)
            batch[DECODED] = self.decoded
        out = predict_next(self.model, batch, self.sampler, self.sampler_steps, self.generator, self.precision)
        frames = tensor_to_frames(out["frame"])
        if self.latent:
            self.latent_memory.add(out["latent"].float().cpu().numpy())
            self.decoded = out["decoded"]
        t2 = time.perf_counter()
        self.memory.add(frames)
        self.states = nxt
        self.seconds["conditions"] += t1 - t0
        self.seconds["world_model"] += t2 - t1
        self.frames += b

    def step_commanded(self, commanded: np.ndarray, joints: np.ndarray | None = None) -> dict:
        """One step towards (B, 7) commanded states given directly (a joint-space command's FK)
        instead of through actions; the pose is reached, the gripper moves at its rate. ``joints``:
        the (B, 7) commanded joint angles, which an arm action map then draws (else IK)."""
        if self.states is None:
            raise RuntimeError("ImaginedEnv.step_commanded before reset")
        if self.physics is not None:
            raise ValueError("step_commanded: commanded states bypass the actions arm_physics executes; "
                             "use step, or an ImaginedEnv without arm_physics")
        if self.stride > 1:
            raise ValueError(f"step_commanded: the world model predicts one frame per chunk of {self.stride} actions "
                             "(frame_stride); a commanded state per step needs a frame_stride 1 model")
        commanded = np.asarray(commanded, np.float32)
        if commanded.shape != (self.batch_size, 7):
            raise ValueError(f"commanded: shape {commanded.shape}, expected ({self.batch_size}, 7)")
        if joints is not None and np.shape(joints) != (self.batch_size, 7):
            raise ValueError(f"joints: shape {np.shape(joints)}, expected ({self.batch_size}, 7)")
        # A set-point per control step (a joint trajectory's) is reached: no tracking gains.
        self._advance(commanded, reached_state(self.states, commanded, self.gripper_rate), joints)
        return self._obs()

    def step(self, actions: np.ndarray) -> dict:
        """Execute (B, 7) actions, or (B, k, 7) chunks in order; returns the observation."""
        if self.states is None:
            raise RuntimeError("ImaginedEnv.step before reset")
        actions = np.asarray(actions, np.float32)
        chunk = actions.ndim == 3
        if not chunk:
            actions = actions[:, None]
        if actions.ndim != 3 or actions.shape[0] != self.batch_size or actions.shape[2] != 7:
            raise ValueError(f"actions: shape {actions.shape}, expected ({self.batch_size}, 7) "
                             f"or ({self.batch_size}, k, 7)")
        if self.stride > 1:
            return self._step_chunk(actions, chunk)
        images, states = [], []
        for i in range(actions.shape[1]):
            self._step_one(actions[:, i])
            images.append(self.memory.frames[-1])
            states.append(self.states.copy())
        obs = self._obs()
        if chunk:
            obs["images"], obs["states"] = np.stack(images, 1), np.stack(states, 1)
        return obs

    def _step_chunk(self, actions: np.ndarray, chunk: bool) -> dict:
        k = actions.shape[1]
        if not chunk or k > self.stride:
            raise ValueError(f"actions: shape {actions.shape}; the world model predicts one frame per chunk of "
                             f"{self.stride} actions (frame_stride): give (B, k, 7) chunks with k <= {self.stride}")
        t0 = time.perf_counter()
        gains = self.model.processor.gains
        chained = [chunk_commanded(self.robot, s, a, self.gripper_rate, gains) for s, a in zip(self.states, actions)]
        commanded = np.stack([c for c, _ in chained])
        states = np.stack([steps for _, steps in chained])
        if self.physics is not None:
            states = self.physics.step(actions)[0]
        self.seconds["conditions"] += time.perf_counter() - t0
        before = self.memory.frames[-1]
        self._advance(commanded, states[:, -1])
        obs = self._obs()
        obs["images"] = np.stack([before] * (k - 1) + [self.memory.frames[-1]], 1)
        obs["states"] = states
        return obs

    def _obs(self) -> dict:
        return {"image": self.memory.frames[-1].copy(), "state": self.states.copy(),
                "instruction": list(self.instructions), "t": self.memory.t}
