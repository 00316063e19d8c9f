"""The policy node's core, without ROS: policy, latest inputs, chunk queue, action -> joint target.

``PolicyController`` is everything ``policy_node`` does except message plumbing:

- Inputs with their receive times (seconds on one clock of the caller's choice; the node uses
  its ROS clock): the latest camera frame (upright RGB, any size: the policy's processor
  resizes it), the latest joint positions, the instruction, reflector verdicts and task
  success. A malformed message replaces the latest input as "bad" (``image_error``, and
  ``on_joint_state`` checks joints itself), so nothing is commanded until a good one arrives.
- Gating (``tick`` answers a ``Refusal`` with a reason instead of a ``Command``): no policy,
  disabled, episode terminated (a done verdict of the current episode, or task success),
  no or empty instruction, a bad or missing input, an input older than ``stale_after_s``,
  an action that cannot be converted (IK failure, a joint jump). Any refusal empties the
  chunk queue, so commanding resumes with a fresh chunk predicted from fresh inputs.
- Actions: a chunk of ``chunk_size`` 7-D LIBERO actions is predicted when the queue is empty
  and executed one per tick (re-plan every chunk, as OpenVLA-OFT's evaluation does).
- Conversion of one action (``convert``): policy state from the joints by FK ->
  ``PandaModel.commanded_state`` (the OSC_POSE goal LIBERO's controller would get) -> target
  position clamped into the workspace box (robot base frame), and moved at most
  ``OSC_POS_MAX_M`` per axis from the current position (so an arm that starts outside the box
  is brought back gradually, never in one jump) -> IK seeded at the current joints (restarts
  only near them) -> joint limits -> rejected if IK misses or a joint would move more than
  ``max_joint_step_rad`` in one step (an IK branch flip). Gripper: open (+w/2, -w/2) if the
  commanded opening is above half open, else closed (0, 0).
- Hot swap: ``load(checkpoint)`` validates the path at once (raising ``PolicyLoadError`` with
  the reason), loads in a background thread, and the next ``tick`` (or ``swap``) swaps it in
  under a lock, between two ticks; a load that fails leaves the old policy running and is reported by
  ``take_load_events`` and ``status``.

Not thread-safe except ``load`` (its thread only hands over a finished policy under the lock):
call everything else from one thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from world_env_common.pose import quat_to_matrix
from world_env_common.robot import DEFAULT_FINGER_JOINT_NAMES, DEFAULT_JOINT_NAMES, PandaModel
from world_env_training.policies import BUILT_IN as TRAINING_BUILT_IN
from world_env_training.policies import PRIVILEGED, ZeroPolicy

__all__ = ["BUILT_IN", "ChunkRecord", "Command", "ControllerConfig", "PolicyController", "PolicyLoadError", "Refusal",
           "ZeroPolicy", "check_checkpoint", "load_policy"]

#: Policies by name: the training package's built-ins less those that read the simulator's
#: privileged state (the scripted expert), which cannot run behind ROS.
BUILT_IN = tuple(name for name in TRAINING_BUILT_IN if name not in PRIVILEGED)
#: Weight of the newest inference time in its running mean.
EMA_WEIGHT = 0.2


class PolicyLoadError(ValueError):
    """A checkpoint that cannot be (or was not) loaded; the message is the reason."""


class ChunkPolicy(Protocol):
    """What the controller needs of a policy."""

    chunk_size: int

    def predict(self, image: np.ndarray, state: np.ndarray, instruction: str) -> np.ndarray:
        """(chunk_size, 7) LIBERO actions for an (H, W, 3) uint8 RGB frame and a (7,) state."""


class VLAChunkPredictor:
    """A ``VLAPolicy`` (world_env_training.models.vla) as a ``ChunkPolicy``, through the same
    ``ChunkSampler`` as LOOP's rollouts and evaluation: the chunk's means, or with ``sample`` a
    chunk drawn from its Laplace law. After each ``predict``, ``last_log_prob`` is the chunk's
    joint log-likelihood under the policy."""

    def __init__(self, model, sample: bool = False, seed: int = 0):
        from world_env_training.models.vla import ChunkSampler

        self.model = model
        self.sampler = ChunkSampler(model, sample=sample, seed=seed)
        self.chunk_size = self.sampler.chunk_size
        self.last_log_prob = float("nan")

    def predict(self, image: np.ndarray, state: np.ndarray, instruction: str) -> np.ndarray:
        drawn = self.sampler(image[None], np.asarray(state, dtype=np.float32)[None], [instruction])
        self.last_log_prob = float(drawn.log_prob[0])
        return drawn.actions[0].detach().cpu().numpy().astype(np.float64)


def check_checkpoint(spec: str) -> str | None:
    """Why ``spec`` cannot be a policy (None if it can): a built-in name, a VLA model folder
    (``config.json``) or a ``train-sft`` run folder (``checkpoints/step_N``). Cheap: reads no
    weights."""
    if not spec:
        return "no checkpoint given (a VLA model folder, a train-sft run folder, or 'zero')"
    if spec in BUILT_IN:
        return None
    if spec in PRIVILEGED:
        return f"'{spec}' needs the simulator's privileged state and cannot run behind ROS"
    path = Path(spec)
    if not path.exists():
        return f"checkpoint {spec} does not exist"
    if not path.is_dir():
        return f"checkpoint {spec} is not a folder"
    if (path / "config.json").is_file():
        return None
    from world_env_training.checkpoints import latest_checkpoint  # light: no torch

    if latest_checkpoint(path) is None:
        return f"checkpoint {spec} holds neither a VLA model (config.json) nor a training run's checkpoints"
    return None


def load_policy(spec: str, device: str = "cpu", sample: bool = False) -> ChunkPolicy:
    """The policy ``spec`` names (see ``check_checkpoint``), on ``device`` (cpu, cuda, auto);
    ``sample``: a VLA draws its chunks from its Laplace law. Raises ``PolicyLoadError`` with
    the reason."""
    reason = check_checkpoint(spec)
    if reason:
        raise PolicyLoadError(reason)
    if spec == "zero":
        return ZeroPolicy()
    from world_env_training.policies import make_policy

    try:
        return VLAChunkPredictor(make_policy(spec, device=device).model, sample=sample)
    except Exception as err:  # noqa: BLE001 - any failure to build is a reason for the caller
        raise PolicyLoadError(f"cannot load {spec}: {type(err).__name__}: {err}") from err


@dataclass
class ChunkRecord:
    """A chunk the controller predicted and the inputs it predicted it from (``take_chunk``)."""

    image: np.ndarray          # (H, W, 3) uint8 RGB
    state: np.ndarray          # (7,)
    instruction: str
    actions: np.ndarray        # (chunk, 7), before clipping
    log_prob: float            # NaN if the policy has no distribution
    sampled: bool
    checkpoint: str


@dataclass
class ControllerConfig:
    """Settings of ``PolicyController`` (the node's parameters of the same names).

    Args:
        joint_names: The 7 arm joint names, in the robot model's order (joint1..joint7).
        finger_joint_names: The 2 finger joint names (robosuite signs: [0, w/2] and [-w/2, 0]).
        control_rate_hz: Commands per second; each trajectory lasts one period (LIBERO: 20 Hz).
        stale_after_s: An input (camera frame, joint state) older than this stops commanding.
        workspace_min: (3,) lower corner of the box the commanded end-effector position is
            clamped to, in the robot base frame (m).
        workspace_max: (3,) upper corner (m).
        base_position: (3,) position of the robot base in the frame of the policy's state (m):
            LIBERO's scene world for a LIBERO-trained policy (e.g. (-0.6, 0, 0) in libero_object),
            zero for a policy trained in the base frame.
        base_quat_wxyz: (4,) orientation of the robot base in that frame.
        max_joint_step_rad: Largest joint change allowed in one step; a bigger one (an IK
            solution on another branch) is refused.
        ik_pos_tol_m: IK position tolerance (m).
        ik_rot_tol_rad: IK orientation tolerance (rad).
        device: Where the policy runs: cpu, cuda, cuda:N or auto.
    """

    joint_names: Sequence[str] = DEFAULT_JOINT_NAMES
    finger_joint_names: Sequence[str] = DEFAULT_FINGER_JOINT_NAMES
    control_rate_hz: float = 20.0
    stale_after_s: float = 1.0
    # LIBERO's expert demonstrations reach x 0.44..0.67, y -0.25..0.28, z 0.01..0.30 m in the
    # base frame (libero_object); the default box leaves room around that. z = 0 is the
    # plane of the base: raise it to the table's clearance on a real arm.
    workspace_min: Sequence[float] = (0.2, -0.5, 0.0)
    workspace_max: Sequence[float] = (0.85, 0.5, 0.75)
    base_position: Sequence[float] = (0.0, 0.0, 0.0)
    base_quat_wxyz: Sequence[float] = (1.0, 0.0, 0.0, 0.0)
    max_joint_step_rad: float = 0.6
    ik_pos_tol_m: float = 1e-3
    ik_rot_tol_rad: float = 1e-2
    device: str = "cpu"

    def __post_init__(self):
        self.joint_names, self.finger_joint_names = list(self.joint_names), list(self.finger_joint_names)
        if len(self.joint_names) != 7 or len(self.finger_joint_names) != 2:
            raise ValueError(f"need 7 arm joint names and 2 finger joint names, got {self.joint_names} "
                             f"and {self.finger_joint_names}")
        if len(set(self.joint_names + self.finger_joint_names)) != 9:
            raise ValueError(f"joint names must be distinct: {self.joint_names + self.finger_joint_names}")
        for name in ("control_rate_hz", "stale_after_s", "max_joint_step_rad", "ik_pos_tol_m", "ik_rot_tol_rad"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name, size in (("workspace_min", 3), ("workspace_max", 3), ("base_position", 3), ("base_quat_wxyz", 4)):
            value = np.asarray(getattr(self, name), dtype=float)
            if value.shape != (size,) or not np.all(np.isfinite(value)):
                raise ValueError(f"{name} must be {size} finite numbers, got {list(getattr(self, name))}")
            setattr(self, name, value)
        if not np.all(self.workspace_min < self.workspace_max):
            raise ValueError(f"workspace_min {self.workspace_min.tolist()} must be below workspace_max "
                             f"{self.workspace_max.tolist()} on every axis")
        norm = float(np.linalg.norm(self.base_quat_wxyz))
        if not abs(norm - 1.0) < 1e-3:
            raise ValueError(f"base_quat_wxyz must be a unit quaternion, got {self.base_quat_wxyz.tolist()}")
        self.base_quat_wxyz = self.base_quat_wxyz / norm


@dataclass
class Command:
    """One control step's command, ready for two JointTrajectory messages of one point each."""

    arm_joint_names: list[str]
    arm_positions: np.ndarray  # (7,) rad, inside the joint limits
    finger_joint_names: list[str]
    finger_positions: np.ndarray  # (2,) m
    time_from_start_s: float
    action: np.ndarray  # (7,) the LIBERO action executed (clipped to [-1, 1])
    target_position: np.ndarray  # (3,) commanded eef position, policy-state frame, after clamping
    clamped: bool  # the workspace box (or the per-step limit) changed the target position


@dataclass
class Refusal:
    """No command this tick; ``reason`` says why (stable text: the node logs each once)."""

    reason: str


class ConversionError(ValueError):
    """An action that cannot become a safe joint target; the message is the reason."""


@dataclass
class _Input:
    value: object = None
    received: float | None = None  # time of the last good message
    error: str | None = None  # the newest message was malformed


@dataclass
class _LoadEvent:
    ok: bool
    checkpoint: str
    message: str


@dataclass
class _Stats:
    steps: int = 0  # commands issued since start
    episode_steps: int = 0
    replans: int = 0
    inference_ms_last: float | None = None
    inference_ms_mean: float | None = None
    clamped_steps: int = 0
    refusals: dict[str, int] = field(default_factory=dict)


class PolicyController:
    """See the module docstring. ``policy``/``checkpoint``: a policy already loaded (and the
    name shown for it); ``loader(spec, device) -> ChunkPolicy`` loads checkpoints (default
    ``load_policy``); ``robot``: the kinematic model (default robosuite's Panda, placed at the
    config's base pose)."""

    def __init__(self, config: ControllerConfig, policy: ChunkPolicy | None = None, checkpoint: str = "",
                 loader: Callable[[str, str], ChunkPolicy] = load_policy, robot: PandaModel | None = None):
        self.config = config
        self.robot = robot or PandaModel(config.base_position, config.base_quat_wxyz, config.joint_names,
                                         config.finger_joint_names)
        self.loader = loader
        self.policy, self.checkpoint = policy, checkpoint if policy is not None else ""
        self.enabled = False
        self.image, self.joints = _Input(), _Input()
        self.fingers = np.array([0.5, -0.5]) * self.robot.gripper_open_width  # open until told otherwise
        self.instruction: str | None = None
        self.instruction_problem: str | None = None
        self.terminated: str | None = None  # the reason, while terminated
        self.episode_start = -math.inf
        self.episode_id: str | None = None
        self.queue: deque[np.ndarray] = deque()
        self.last_chunk: ChunkRecord | None = None
        self.stats = _Stats()
        self.last_reason: str | None = "not started"
        self._base_rot = quat_to_matrix(config.base_quat_wxyz, order="wxyz")
        self._lock = threading.Lock()
        self._pending: tuple[ChunkPolicy, str] | None = None
        self._loading: str | None = None
        self._load_thread: threading.Thread | None = None
        self._events: list[_LoadEvent] = []
        self.load_error: str | None = None

    # ------------------------------------------------------------------ inputs
    def on_image(self, rgb: np.ndarray, now: float) -> None:
        """A good camera frame: (H, W, 3) uint8 upright RGB."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            self.image_error(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}", now)
            return
        self.image = _Input(rgb, now, None)

    def image_error(self, reason: str, now: float) -> None:
        """A camera message that is not a usable frame: refuse until a good one arrives."""
        self.image = _Input(None, self.image.received, reason)

    def on_joint_state(self, names: Sequence[str], positions: Sequence[float], now: float) -> None:
        """A joint-state message (names and positions, any order, any extra joints).

        A message with all 7 arm joints (finite) updates the arm, and the fingers if it has
        them (else the last known opening stays: grippers often publish separately). A message
        with finger joints only (a separate gripper publisher) updates the fingers. Anything
        else (some arm joints missing, names/positions length mismatch, non-finite values) marks
        the joint input bad until a good message arrives.
        """
        names, positions = list(names), list(positions)
        if len(names) != len(positions):
            self.joints = _Input(None, self.joints.received, f"{len(names)} names but {len(positions)} positions")
            return
        index = {n: i for i, n in enumerate(names)}
        arm = [n for n in self.config.joint_names if n in index]
        fingers = [n for n in self.config.finger_joint_names if n in index]
        if not arm and len(fingers) == 2:  # a gripper's own joint_states
            f = np.array([positions[index[n]] for n in fingers], dtype=float)
            if not np.all(np.isfinite(f)):
                self.joints = _Input(None, self.joints.received, f"non-finite position for finger joint(s) {fingers}")
                return
            self.fingers = f
            return
        missing = [n for n in self.config.joint_names if n not in index]
        if missing:
            self.joints = _Input(None, self.joints.received, f"missing joint(s) {missing}")
            return
        wanted = self.config.joint_names + (fingers if len(fingers) == 2 else [])
        values = np.array([positions[index[n]] for n in wanted], dtype=float)
        bad = [n for n, v in zip(wanted, values) if not np.isfinite(v)]
        if bad:
            self.joints = _Input(None, self.joints.received, f"non-finite position for joint(s) {bad}")
            return
        if len(fingers) == 2:
            self.fingers = values[7:]
        self.joints = _Input(values[:7], now, None)

    def joints_error(self, reason: str, now: float) -> None:
        self.joints = _Input(None, self.joints.received, reason)

    def on_instruction(self, text: str) -> None:
        """The task instruction; a new one starts a new chunk."""
        text = text.strip()
        if text != self.instruction:
            self.queue.clear()
        self.instruction = text
        self.instruction_problem = None

    def instruction_error(self, reason: str) -> None:
        """An instruction the caller refused: refuse to command until a good one arrives."""
        self.queue.clear()
        self.instruction, self.instruction_problem = "", reason

    def on_reflection(self, done: bool, stamp: float, episode_id: str = "", reward: float | None = None) -> bool:
        """A reflector verdict on the frame stamped ``stamp`` (0: unknown). A done verdict of the
        current episode terminates it; verdicts on frames from before the last reset/enable, or
        of another episode id than the first one seen since, are ignored. Returns whether it
        terminated the episode."""
        if stamp and stamp < self.episode_start:
            return False
        if episode_id:
            if self.episode_id is None:
                self.episode_id = episode_id
            elif episode_id != self.episode_id:
                return False
        if done and self.terminated is None:
            tail = f", reward {reward:.2f}" if reward is not None else ""
            self.terminated = f"episode terminated: the reflector judged it done{tail}; call reset or re-enable"
            self.queue.clear()
            return True
        return False

    def on_success(self, success: bool) -> bool:
        """Task success as the simulator or a success detector reports it; True terminates."""
        if success and self.terminated is None:
            self.terminated = "episode terminated: task success reported; call reset or re-enable"
            self.queue.clear()
            return True
        return False

    # ------------------------------------------------------------------ episode control
    def reset(self, now: float) -> None:
        """A new episode: forget termination, episode id and the chunk queue."""
        self.terminated, self.episode_id = None, None
        self.episode_start = now
        self.queue.clear()
        self.stats.episode_steps = 0

    def set_enabled(self, enabled: bool, now: float) -> None:
        """Enabling (again) starts a new episode; disabling stops commanding at the next tick."""
        if enabled:
            self.reset(now)
        else:
            self.queue.clear()
        self.enabled = bool(enabled)

    # ------------------------------------------------------------------ policy loading
    def load(self, checkpoint: str) -> None:
        """Start loading ``checkpoint`` in the background; the next tick after it finishes swaps
        it in. Raises ``PolicyLoadError`` at once for an invalid path or while another load runs."""
        reason = check_checkpoint(checkpoint)
        if reason:
            raise PolicyLoadError(reason)
        with self._lock:
            if self._loading is not None:
                raise PolicyLoadError(f"still loading {self._loading}; try again when it is done")
            self._loading = checkpoint
        self._load_thread = threading.Thread(target=self._load_worker, args=(checkpoint,), name="policy-load",
                                             daemon=True)
        self._load_thread.start()

    def _load_worker(self, checkpoint: str) -> None:
        try:
            policy = self.loader(checkpoint, self.config.device)
            chunk = int(policy.chunk_size)
            if chunk < 1:
                raise PolicyLoadError(f"policy chunk_size {chunk} < 1")
        except Exception as err:  # noqa: BLE001 - reported, the old policy keeps running
            message = str(err) if isinstance(err, PolicyLoadError) else f"cannot load {checkpoint}: {err}"
            with self._lock:
                self._loading = None
                self.load_error = message
                self._events.append(_LoadEvent(False, checkpoint, message))
            return
        with self._lock:
            self._pending = (policy, checkpoint)

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until a background load has finished (not necessarily swapped in yet)."""
        thread = self._load_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def loading(self) -> str | None:
        with self._lock:
            return self._loading

    def take_load_events(self) -> list[_LoadEvent]:
        """Finished loads (swapped in, or failed) since the last call."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def swap(self) -> None:
        """Swap in a policy whose background load has finished (``tick`` does this first)."""
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is None:
                return
            self.policy, self.checkpoint = pending
            self._loading, self.load_error = None, None
            self._events.append(_LoadEvent(True, self.checkpoint, f"now running {self.checkpoint}"))
        self.queue.clear()

    # ------------------------------------------------------------------ control
    def gate(self, now: float) -> str | None:
        """Why no command may be sent now (None: commanding is allowed)."""
        if self.policy is None:
            return "no policy loaded"
        if not self.enabled:
            return "disabled (enable with ~/enable or the enabled parameter)"
        if self.terminated:
            return self.terminated
        if self.instruction_problem:
            return self.instruction_problem
        if self.instruction is None:
            return "no instruction received yet"
        if not self.instruction:
            return "empty instruction"
        stale = self.config.stale_after_s
        for name, what, item in (("camera", "frame", self.image), ("joint_states", "joint state", self.joints)):
            if item.error:
                return f"bad {name} input: {item.error}"
            if item.received is None:
                return f"no {name} {what} received yet"
            if now - item.received > stale:
                return f"{name} stale: no valid {what} for more than {stale:g} s"
        return None

    def tick(self, now: float) -> Command | Refusal:
        """One control step: swap in a loaded policy, gate, predict a chunk if the queue is
        empty, convert the next action. Returns the command or the reason for none."""
        self.swap()
        reason = self.gate(now)
        if reason is None:
            try:
                return self._step()
            except ConversionError as err:
                reason = str(err)
        self.queue.clear()
        self.last_reason = reason
        self.stats.refusals[reason] = self.stats.refusals.get(reason, 0) + 1
        return Refusal(reason)

    def _step(self) -> Command:
        q, fingers = self.joints.value, self.fingers
        if not self.queue:
            state = self.robot.state_from_joints(q, fingers)
            t0 = time.perf_counter()
            chunk = np.asarray(self.policy.predict(self.image.value, state, self.instruction), dtype=float)
            ms = 1e3 * (time.perf_counter() - t0)
            s = self.stats
            s.inference_ms_last = ms
            s.inference_ms_mean = ms if s.inference_ms_mean is None else s.inference_ms_mean + EMA_WEIGHT * (
                ms - s.inference_ms_mean)
            s.replans += 1
            if chunk.ndim != 2 or chunk.shape[1] != 7 or len(chunk) == 0:
                raise ConversionError(f"policy returned actions of shape {chunk.shape}, expected (chunk, 7)")
            if not np.all(np.isfinite(chunk)):
                raise ConversionError("policy returned non-finite actions")
            self.queue.extend(np.clip(chunk, -1.0, 1.0))
            self.last_chunk = ChunkRecord(self.image.value, state, self.instruction, chunk,
                                          float(getattr(self.policy, "last_log_prob", float("nan"))),
                                          bool(getattr(self.policy, "sample", False)), self.checkpoint)
        command = self.convert(q, fingers, self.queue.popleft())
        self.last_reason = None
        self.stats.steps += 1
        self.stats.episode_steps += 1
        self.stats.clamped_steps += int(command.clamped)
        return command

    def take_chunk(self) -> ChunkRecord | None:
        """The chunk predicted since the last call (None if none)."""
        chunk, self.last_chunk = self.last_chunk, None
        return chunk

    def to_base(self, p_world: np.ndarray) -> np.ndarray:
        """A position in the policy-state frame -> the robot base frame."""
        return self._base_rot.T @ (np.asarray(p_world, dtype=float) - self.config.base_position)

    def from_base(self, p_base: np.ndarray) -> np.ndarray:
        return self._base_rot @ np.asarray(p_base, dtype=float) + self.config.base_position

    def convert(self, q: np.ndarray, fingers: np.ndarray, action: np.ndarray) -> Command:
        """(7,) LIBERO action in joints ``q`` (fingers ``fingers``) -> the command (module doc).
        Raises ``ConversionError`` with the reason."""
        robot, cfg = self.robot, self.config
        action = np.clip(np.asarray(action, dtype=float), -robot.OSC_INPUT_MAX, robot.OSC_INPUT_MAX)
        state = robot.state_from_joints(q, fingers)
        target = robot.commanded_state(state, action)
        current = self.to_base(state[:3])
        wanted = self.to_base(target[:3])
        boxed = np.clip(wanted, cfg.workspace_min, cfg.workspace_max)
        boxed = current + np.clip(boxed - current, -robot.OSC_POS_MAX_M, robot.OSC_POS_MAX_M)
        clamped = not np.allclose(boxed, wanted, rtol=0.0, atol=1e-9)
        target[:3] = self.from_base(boxed)
        result = robot.joints_from_state(target, q_init=q, pos_tol=cfg.ik_pos_tol_m, rot_tol=cfg.ik_rot_tol_rad,
                                         restarts=3)
        if not result.success:
            raise ConversionError("IK found no joint solution for the commanded pose")
        q_target = robot.clamp(result.q)
        jump = np.abs(q_target - np.asarray(q, dtype=float))
        if np.any(jump > cfg.max_joint_step_rad):
            names = [n for n, j in zip(cfg.joint_names, jump) if j > cfg.max_joint_step_rad]
            raise ConversionError(f"IK solution moves joint(s) {names} more than max_joint_step_rad="
                                  f"{cfg.max_joint_step_rad:g} in one step")
        half = 0.5 * robot.gripper_open_width
        fingers_target = np.array([half, -half]) if target[6] > half else np.zeros(2)
        return Command(list(cfg.joint_names), q_target, list(cfg.finger_joint_names), fingers_target,
                       1.0 / cfg.control_rate_hz, action, target[:3].copy(), clamped)

    # ------------------------------------------------------------------ report
    def status(self) -> dict:
        """JSON-ready summary for ``~/status``."""
        s = self.stats
        with self._lock:
            loading, load_error = self._loading, self.load_error
        return {"enabled": self.enabled, "commanding": self.last_reason is None, "reason": self.last_reason,
                "checkpoint": self.checkpoint, "loading": loading, "load_error": load_error,
                "terminated": self.terminated is not None, "instruction": self.instruction,
                "episode_id": self.episode_id, "steps": s.steps, "episode_steps": s.episode_steps,
                "replans": s.replans, "clamped_steps": s.clamped_steps,
                "inference_ms_last": None if s.inference_ms_last is None else round(s.inference_ms_last, 2),
                "inference_ms_mean": None if s.inference_ms_mean is None else round(s.inference_ms_mean, 2)}
