"""The reflector node's core, without ROS: a trained Instant Reflector judging one episode online.

``ReflectorScorer`` is everything ``reflector_node`` does except message plumbing:

- Loading (``load_reflector``): a reflector model folder (``config.json``) or a
  ``train-reflector`` run folder (its newest checkpoint) on a device, with an optional
  threshold overriding the saved eta. Failures raise ``ScorerLoadError`` with the reason.
- Episodes: ``reset(instruction, episode_id=None)`` starts one (a fresh id is made when none is
  given) and empties the model's frame-feature cache; ``score(frame)`` appends the frame to the
  episode (the first one is o_0) and returns a ``Verdict`` (R in [0, 1], done, step index).
  Frames of any size are resized by the model's processor to its input size
  (``image_size`` x ``image_size``, bilinear with antialiasing) before encoding.
- Refusals: ``score`` raises ``ValueError`` with the reason when no (or an empty) instruction is
  set, or when the frame is not an (H, W, 3) uint8 array; nothing is appended then.
- Done latch: once a frame of the episode is judged done (R > threshold), every later frame of
  that episode is reported done too (termination is final, as in an RL rollout); ``reward``
  stays the model's R of that frame. Only ``reset`` (a new episode) clears it.

Not thread-safe: call it from one thread.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ReflectorScorer", "ScorerLoadError", "Verdict", "check_checkpoint", "load_reflector", "new_episode_id"]


class ScorerLoadError(ValueError):
    """A checkpoint that cannot be loaded; the message is the reason."""


@dataclass(frozen=True)
class Verdict:
    reward: float  #: R in [0, 1] of the judged frame
    done: bool  #: R > threshold for this frame or an earlier one of the episode (latched)
    step: int  #: index of the judged frame in the episode (0: the first frame after reset)


def new_episode_id() -> str:
    return uuid.uuid4().hex[:12]


def check_checkpoint(spec: str) -> str | None:
    """Why ``spec`` cannot be a reflector (None if it can). Cheap: reads no weights."""
    if not spec:
        return "no checkpoint given (a reflector model folder or a train-reflector run folder)"
    path = Path(spec)
    if not path.exists():
        return f"checkpoint {spec} does not exist"
    if not path.is_dir():
        return f"checkpoint {spec} is not a folder"
    if (path / "config.json").is_file():
        return None
    from world_env_training.checkpoints import latest_checkpoint  # light: no torch

    if latest_checkpoint(path) is None:
        return f"checkpoint {spec} holds neither a reflector model (config.json) nor a training run's checkpoints"
    return None


def load_reflector(spec: str, device: str = "cpu", threshold: float | None = None):
    """The ``Reflector`` in ``spec`` on ``device``; ``threshold`` overrides its saved eta.
    Raises ``ScorerLoadError`` with the reason."""
    reason = check_checkpoint(spec)
    if reason:
        raise ScorerLoadError(reason)
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ScorerLoadError(f"threshold must be in (0, 1), got {threshold!r}")
    from world_env_training.models.reflector import Reflector

    try:
        return Reflector.from_pretrained(spec, device=device, threshold=threshold)
    except Exception as err:  # noqa: BLE001 - any failure to build is a reason for the caller
        raise ScorerLoadError(f"cannot load {spec}: {type(err).__name__}: {err}") from err


class ReflectorScorer:
    """One online episode of a reflector: ``reset`` then ``score`` each frame (o_0 first)."""

    def __init__(self, checkpoint: str, device: str = "cpu", threshold: float | None = None, model=None):
        self.checkpoint = checkpoint
        self.model = model if model is not None else load_reflector(checkpoint, device, threshold)
        self.session = self.model.session(1)
        self.instruction = ""
        self.episode_id = ""
        self.step = -1  # index of the last judged frame (-1: none yet)
        self.done = False
        self.frames_scored = 0
        self.score_ms_last: float | None = None
        self.score_ms_total = 0.0  # over all frames since start

    @property
    def score_ms_mean(self) -> float | None:
        """Mean milliseconds of one ``score`` (encoder + LLM pass), over all frames so far."""
        return self.score_ms_total / self.frames_scored if self.frames_scored else None

    @property
    def threshold(self) -> float:
        return float(self.model.threshold)

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    def reset(self, instruction: str, episode_id: str | None = None) -> str:
        """Start a new episode for ``instruction`` (stripped; must not be empty). Returns its id."""
        instruction = (instruction or "").strip()
        if not instruction:
            raise ValueError("empty instruction")
        self.session.reset(instruction)
        self.instruction = instruction
        self.episode_id = episode_id or new_episode_id()
        self.step, self.done = -1, False
        return self.episode_id

    def clear(self) -> None:
        """Forget the instruction (and the episode): ``score`` refuses until the next ``reset``."""
        self.instruction, self.episode_id = "", ""
        self.step, self.done = -1, False

    def score(self, frame: np.ndarray) -> Verdict:
        """Append ``frame`` ((H, W, 3) uint8 upright RGB, any size) to the episode and judge it."""
        if not self.instruction:
            raise ValueError("no instruction yet")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
            raise ValueError(f"frame {frame.shape} {frame.dtype}: expected (H, W, 3) uint8")
        t0 = time.perf_counter()
        reward, done = self.session.score(frame)  # the processor resizes to image_size
        ms = (time.perf_counter() - t0) * 1e3
        self.score_ms_last = ms
        self.score_ms_total += ms
        self.frames_scored += 1
        self.step += 1
        self.done = self.done or bool(done)
        return Verdict(reward=min(max(float(reward), 0.0), 1.0), done=self.done, step=self.step)
