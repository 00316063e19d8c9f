"""Everything between raw observations and the network: images, states, actions, instructions.

``VLAProcessor`` turns raw inputs (uint8 frames, states in metres/radians, LIBERO actions,
instruction strings) into the batch tensors ``VLAPolicy.forward`` takes (keys below), and maps
the network's normalised outputs back to LIBERO's action units. Its statistics are computed
from the training dataset (``compute_stats``) and saved with the model
(``processor.safetensors``), so a checkpoint acts on raw observations with nothing else at hand.

Normalisation:
  - images: resized (bilinear, antialiased) to ``config.image_size``, scaled to [0, 1], then
    standardised with the vision encoder's mean/std (ImageNet for the wheel encoders);
  - states: standardised with the dataset's per-dimension mean and std (std floored at 1e-3
    so that a dimension that never moves in the demos does not blow up);
  - actions: affine map of the dataset's [q, 1-q] quantile range per dimension onto [-1, 1]
    (``config.action_quantile``; LIBERO's gripper command, already +-1, maps to itself).
    Outside that range values extend linearly (not clipped), so the map is invertible.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from world_env_training.models.vla.configuration_vla import VLAConfig

# Batch keys (LeRobot's names where they exist).
OBS_IMAGE = "observation.image"  # (B, 3, S, S) float32, encoder-normalised
OBS_STATE = "observation.state"  # (B, proprio_dim) float32, standardised
TEXT_IDS = "instruction.input_ids"  # (B, L) int64, right-padded with 0
TEXT_MASK = "instruction.attention_mask"  # (B, L) bool, True on real tokens
ACTION = "action"  # (B, chunk_size, action_dim) float32, normalised (~[-1, 1])
ACTION_IS_PAD = "action_is_pad"  # (B, chunk_size) bool, True past the episode's end

STATS_FILE = "processor.safetensors"
STATE_STD_FLOOR = 1e-3
ACTION_HALF_RANGE_FLOOR = 1e-3  # a dimension that never moves keeps a finite inverse map


def compute_stats(dataset, config: VLAConfig, episodes: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Normalisation statistics of ``dataset`` (a ``Dataset``) over ``episodes`` (default: all).

    Returns float32 tensors: action_low, action_high (the [q, 1-q] quantiles), state_mean,
    state_std. Reads only the actions and states arrays.
    """
    episodes = range(len(dataset)) if episodes is None else episodes
    arrays = [dataset.load_arrays(i, ("actions", "states")) for i in episodes]
    actions = np.concatenate([a["actions"] for a in arrays]).astype(np.float64)
    states = np.concatenate([a["states"] for a in arrays]).astype(np.float64)
    if len(actions) == 0:
        raise ValueError(f"{dataset.path}: no actions to compute normalisation statistics from")
    q = config.action_quantile
    stats = {"action_low": np.quantile(actions, q, axis=0), "action_high": np.quantile(actions, 1 - q, axis=0),
             "state_mean": states.mean(0), "state_std": states.std(0)}
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in stats.items()}


def identity_stats(config: VLAConfig) -> dict[str, torch.Tensor]:
    """Statistics that leave states and actions unchanged (a model not yet fitted to data)."""
    a, s = config.action_dim, config.proprio_dim
    return {"action_low": -torch.ones(a), "action_high": torch.ones(a),
            "state_mean": torch.zeros(s), "state_std": torch.ones(s)}


class VLAProcessor:
    """Raw inputs -> batch tensors, and normalised actions -> LIBERO actions.

    Args:
        config: The policy's configuration (image size, prompt, dimensions).
        tokenizer: Anything with ``encode(text, add_special_tokens=False) -> list[int]``.
        image_mean, image_std: Per-channel statistics the vision encoder expects.
        stats: ``compute_stats``'s dict; None means identity statistics.
    """

    def __init__(self, config: VLAConfig, tokenizer, image_mean, image_std, stats: dict | None = None):
        self.config, self.tokenizer = config, tokenizer
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.set_stats(stats if stats is not None else identity_stats(config))
        self._encode = lru_cache(maxsize=4096)(self._encode_uncached)  # instructions repeat a lot

    # --- statistics -------------------------------------------------------------------------

    def set_stats(self, stats: dict[str, torch.Tensor]) -> None:
        want = {"action_low": self.config.action_dim, "action_high": self.config.action_dim,
                "state_mean": self.config.proprio_dim, "state_std": self.config.proprio_dim}
        for key, size in want.items():
            if key not in stats or tuple(stats[key].shape) != (size,):
                got = tuple(stats[key].shape) if key in stats else "missing"
                raise ValueError(f"processor statistics: {key} {got}, expected ({size},)")
        self.stats = {k: stats[k].detach().to(torch.float32).cpu().clone() for k in want}
        low, high = self.stats["action_low"], self.stats["action_high"]
        self.action_center = (high + low) / 2
        self.action_half_range = ((high - low) / 2).clamp_min(ACTION_HALF_RANGE_FLOOR)
        self.state_std = self.stats["state_std"].clamp_min(STATE_STD_FLOOR)

    def save(self, folder: str | Path) -> None:
        save_file({k: v.contiguous() for k, v in self.stats.items()}, str(Path(folder) / STATS_FILE))

    @staticmethod
    def load_stats(folder: str | Path) -> dict[str, torch.Tensor]:
        return load_file(str(Path(folder) / STATS_FILE))

    # --- per input --------------------------------------------------------------------------

    def images(self, images) -> torch.Tensor:
        """(B, H, W, 3) uint8 upright RGB (numpy or tensor) -> (B, 3, S, S) float32."""
        x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images: {x.dtype} {tuple(x.shape)}, expected uint8 (B, H, W, 3)")
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.image_mean) / self.image_std

    def states(self, states) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(states, dtype=np.float32))
        if s.ndim != 2 or s.shape[1] != self.config.proprio_dim:
            raise ValueError(f"states: shape {tuple(s.shape)}, expected (B, {self.config.proprio_dim})")
        return (s - self.stats["state_mean"]) / self.state_std

    def normalize_actions(self, actions) -> torch.Tensor:
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32))
        return (a - self.action_center) / self.action_half_range

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return actions * self.action_half_range.to(actions) + self.action_center.to(actions)

    def unnormalize_distribution(self, mu: torch.Tensor, log_scale: torch.Tensor):
        """Laplace(mu, exp(log_scale)) in normalised units -> the same law in LIBERO units.

        The map is affine per dimension, a -> center + half_range * a, and an affine image of a
        Laplace is a Laplace: mean center + half_range * mu, scale half_range * b.
        """
        return (self.unnormalize_actions(mu), log_scale + self.action_half_range.to(log_scale).log())

    def tokenize(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompted instructions -> right-padded ids (B, L) and mask (B, L)."""
        encoded = [self._encode(text) for text in instructions]
        length = max(1, max(len(ids) for ids in encoded))
        ids = torch.zeros(len(encoded), length, dtype=torch.long)
        mask = torch.zeros(len(encoded), length, dtype=torch.bool)
        for row, tokens in enumerate(encoded):
            ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, :len(tokens)] = True
        return ids, mask

    def _encode_uncached(self, instruction: str) -> tuple[int, ...]:
        text = self.config.prompt_template.format(instruction=instruction.strip().lower())
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    # --- whole batch ------------------------------------------------------------------------

    def __call__(self, images, states, instructions: list[str], actions=None, action_is_pad=None,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Raw batch -> tensors on ``device``. ``actions`` (B, chunk, action_dim) in LIBERO units
        and ``action_is_pad`` (B, chunk) are needed only for training."""
        if len(instructions) != len(images) or len(states) != len(images):
            raise ValueError(f"batch: {len(images)} images, {len(states)} states, {len(instructions)} instructions")
        ids, mask = self.tokenize(list(instructions))
        batch = {OBS_IMAGE: self.images(images), OBS_STATE: self.states(states), TEXT_IDS: ids, TEXT_MASK: mask}
        if actions is not None:
            batch[ACTION] = self.normalize_actions(actions)
            pad = (torch.zeros(batch[ACTION].shape[:2], dtype=torch.bool) if action_is_pad is None
                   else torch.as_tensor(np.asarray(action_is_pad), dtype=torch.bool))
            batch[ACTION_IS_PAD] = pad
        return {k: v.to(device) for k, v in batch.items()}
