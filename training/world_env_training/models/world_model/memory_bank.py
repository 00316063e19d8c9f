"""Memory bank: which past frames condition the prediction of the next one.

Policy (``select_memory``). To predict o_{t+1} the model sees K = ``size`` frames, in slots:

    slot 0 .. recent-1      the most recent frames, newest first: o_t, o_{t-1}, ..., o_{t-recent+1}
    slot recent .. K-2      strided older frames, newer first: o_{t-recent+1-stride},
                            o_{t-recent+1-2*stride}, ...
    slot K-1                the episode's first frame o_0 (when K > recent)

Indices below 0 are clamped to 0, so early in an episode the older slots repeat o_0. Every
slot therefore has a fixed meaning (slot 0 is always the current frame, the last slot always
the first frame), which is what lets a convolutional U-Net read them as stacked channels.
Why this mix: the recent frames carry motion (velocity of the arm and of objects in hand);
the first frame is an uncorrupted view of the scene that autoregressive rollouts cannot drift
away from (objects hidden by the arm reappear as they were); the strided frames cover the
middle of long episodes at a fixed cost.

``MemoryBank`` applies the policy to a batch of rollouts advancing in lockstep (the imagined
environment): it keeps every frame of the episode (64x64 uint8 frames cost 12 KB each, a
300-step episode 3.7 MB per rollout) and gathers the K selected ones per step.
"""

from __future__ import annotations

import numpy as np


def select_memory(t: int, size: int, recent: int, stride: int) -> list[int]:
    """Frame indices (length ``size``) conditioning the prediction of o_{t+1}; see the module
    docstring. t >= 0 is the current frame's index; 1 <= recent <= size; stride >= 1."""
    if t < 0:
        raise ValueError(f"t={t}: expected a non-negative frame index")
    if not 1 <= recent <= size:
        raise ValueError(f"recent={recent}: expected 1..size ({size})")
    if stride < 1:
        raise ValueError(f"stride={stride}: expected a positive integer")
    picks = [t - i for i in range(recent)]
    if size > recent:
        oldest_recent = t - recent + 1
        picks += [oldest_recent - stride * j for j in range(1, size - recent)]
        picks.append(0)
    return [max(0, i) for i in picks]


class MemoryBank:
    """Frames of B rollouts that advance together, and the memory-bank selection over them.

    Args:
        size, recent, stride: the selection policy (``select_memory``).
    """

    def __init__(self, size: int, recent: int, stride: int):
        select_memory(0, size, recent, stride)  # validates the policy now, not at the first step
        self.size, self.recent, self.stride = size, recent, stride
        self.frames: list[np.ndarray] = []

    def reset(self, frames0: np.ndarray) -> None:
        """Start new episodes from (B, H, W, 3) uint8 first frames."""
        self.frames = [np.asarray(frames0)]

    def add(self, frames: np.ndarray) -> None:
        """Append the next (B, H, W, 3) frames."""
        if not self.frames:
            raise RuntimeError("MemoryBank.add before reset")
        if frames.shape != self.frames[0].shape:
            raise ValueError(f"frames: shape {frames.shape}, expected {self.frames[0].shape}")
        self.frames.append(np.asarray(frames))

    @property
    def t(self) -> int:
        """Index of the newest frame."""
        return len(self.frames) - 1

    def indices(self) -> list[int]:
        return select_memory(self.t, self.size, self.recent, self.stride)

    def history(self) -> np.ndarray:
        """(B, K, H, W, 3) uint8: the selected frames, slot order of ``select_memory``."""
        if not self.frames:
            raise RuntimeError("MemoryBank.history before reset")
        return np.stack([self.frames[i] for i in self.indices()], axis=1)
