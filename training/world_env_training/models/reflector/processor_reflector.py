"""Everything between raw episodes and the reflector network: frames, frame choice, text.

``ReflectorProcessor`` turns uint8 frames into the encoder's input, instructions into prompt
token ids, and says which frames of o_0..o_t the LLM reads (``sample_frame_indices``).
It holds no fitted statistics: images are standardised with the vision encoder's own mean/std
and success labels need no normalisation, so a model folder needs no processor file.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional as F

from world_env_training.models.reflector.configuration_reflector import ReflectorConfig

# Batch keys.
FRAME_FEATURES = "frame_features"  # (B, M, tokens_per_frame, C) float32: frozen encoder output
TEXT_IDS = "instruction.input_ids"  # (B, L) int64, left-padded with 0
TEXT_MASK = "instruction.attention_mask"  # (B, L) bool, True on real tokens
LABEL = "success"  # (B,) float32 in {0, 1}: the task is achieved in the current frame


def sample_frame_indices(t: int, num_frames: int) -> list[int]:
    """Which of the frames o_0..o_t the reflector reads when scoring o_t: ``num_frames`` indices
    rounded from an even grid over [0, t], so always o_0 (the scene before anything moved) and
    o_t (the frame being judged), with evenly spaced ones in between.

    While t < num_frames - 1 some frames repeat (t=1, M=4 -> [0, 0, 1, 1]): the LLM always sees
    M frame slots, so a batch of episodes at different t needs no padding, and the slot
    embeddings keep their meaning (slot 0 = start, slot M-1 = now).
    """
    if t < 0:
        raise ValueError(f"t={t}: expected a frame index >= 0")
    if num_frames == 1:
        return [t]
    return np.rint(np.linspace(0, t, num_frames)).astype(int).tolist()


class ReflectorProcessor:
    """Raw inputs -> tensors for ``Reflector``.

    Args:
        config: The reflector's configuration (image size, prompt, question).
        tokenizer: Anything with ``encode(text, add_special_tokens=False) -> list[int]``.
        image_mean, image_std: Per-channel statistics the vision encoder expects.
    """

    def __init__(self, config: ReflectorConfig, tokenizer, image_mean, image_std):
        self.config, self.tokenizer = config, tokenizer
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self._encode = lru_cache(maxsize=4096)(self._encode_uncached)  # instructions repeat a lot
        self.question_ids = torch.tensor(tokenizer.encode(config.question, add_special_tokens=False),
                                         dtype=torch.long)

    def frame_indices(self, t: int) -> list[int]:
        return sample_frame_indices(t, self.config.num_frames)

    def images(self, images) -> torch.Tensor:
        """(N, H, W, 3) uint8 upright RGB (numpy or tensor) -> (N, 3, S, S) float32."""
        x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images: {x.dtype} {tuple(x.shape)}, expected uint8 (N, H, W, 3)")
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.image_mean) / self.image_std

    def tokenize(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompted instructions -> left-padded ids (B, L) and mask (B, L). Left padding keeps
        every sample's real tokens contiguous up to the frames, so the layout after the prompt
        is the same for the whole batch."""
        encoded = [self._encode(text) for text in instructions]
        length = max(1, max(len(ids) for ids in encoded))
        ids = torch.zeros(len(encoded), length, dtype=torch.long)
        mask = torch.zeros(len(encoded), length, dtype=torch.bool)
        for row, tokens in enumerate(encoded):
            if tokens:
                ids[row, length - len(tokens):] = torch.tensor(tokens, dtype=torch.long)
                mask[row, length - len(tokens):] = True
        return ids, mask

    def _encode_uncached(self, instruction: str) -> tuple[int, ...]:
        text = self.config.prompt_template.format(instruction=instruction.strip().lower())
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def __call__(self, frame_features: torch.Tensor, instructions: list[str], labels=None,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Encoded frames (B, M, tokens, C) + B instructions (+ labels (B,)) -> a batch on ``device``."""
        if frame_features.ndim != 4 or frame_features.shape[1] != self.config.num_frames:
            raise ValueError(f"frame_features: shape {tuple(frame_features.shape)}, expected "
                             f"(B, {self.config.num_frames}, tokens, C)")
        if len(instructions) != frame_features.shape[0]:
            raise ValueError(f"batch: {frame_features.shape[0]} samples, {len(instructions)} instructions")
        ids, mask = self.tokenize(list(instructions))
        batch = {FRAME_FEATURES: frame_features, TEXT_IDS: ids, TEXT_MASK: mask}
        if labels is not None:
            batch[LABEL] = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
        return {k: v.to(device) for k, v in batch.items()}
