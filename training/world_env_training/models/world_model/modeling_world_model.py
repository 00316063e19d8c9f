"""The action-conditioned diffusion world model (World-Env's world simulator).

``WorldModel`` is the denoiser plus its condition encoders; it holds no noise schedule.
One prediction: o_{t+1} (or the residual (o_{t+1} - o_t) / residual_std, ``predict_residual``, with
residual_std the training changes' standard deviation held by the processor) is denoised
by a diffusers ``UNet2DConditionModel`` whose input is the noisy frame concatenated with

- pixel conditions: the K memory-bank frames (slot 0 = o_t) and the action map of the
  commanded next state ``PandaModel.commanded_state(s_t, a_t)``;

and whose cross-attention (at every level of ``cross_attention_levels`` and the middle block)
reads the tokens

- semantic: a frozen ImageNet encoder's (or an open_clip tower's) feature map of o_t, pooled to
  a grid and projected, plus a learned position embedding per token;
- geometry: a small CNN over the geometry map (Pluecker rays, point map where there is depth)
  pooled to a grid, plus one robot-state token (an MLP of s_t and the commanded state); or the
  VGGT adapter's tokens plus the same state token.

When both token paths are off, the cross-attention reads one learned null token. Turning a
path off removes its channels or tokens from the U-Net's input, not just a weight.

Training (``forward``): v-prediction MSE under a DDPM schedule (``make_scheduler("ddpm")``).
Sampling (``predict_next_frames``, the pipeline function): DDIM or DPMSolverMultistep built
from the training scheduler's config with ``from_config``; few steps (``sampler_steps``).

Model folders: ``config.json``, ``processor.json``, ``scheduler_config.json`` and
``model.safetensors`` (trainable weights only; frozen pretrained encoders are rebuilt from their
wheels). ``save_pretrained`` writes the folder atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from world_env_training.models.world_model.configuration_world_model import CONFIG_NAME, WorldModelConfig
from world_env_training.models.world_model.processor_world_model import (
    ACTION_MAP, COMMANDED, DECODED, GEOMETRY, GEOMETRY_CHANNELS, HISTORY, LATENTS, STATE, TARGET, TARGET_LATENT,
    WorldModelProcessor,
)

WEIGHTS_NAME = "model.safetensors"
SCHEDULER_DIR = "scheduler"
AUTOENCODER_DIR = "autoencoder"
# Not in model.safetensors: rebuilt from their wheels, or (the autoencoder) kept in its own folder.
_FROZEN_PREFIXES = ("semantic.backbone.", "geometry.vggt.", "autoencoder.")


def make_scheduler(config: WorldModelConfig, kind: str = "ddpm"):
    """The training scheduler (``ddpm``) or a sampler (``ddim``, ``dpmsolver``) built from its config."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    train = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                          prediction_type="v_prediction", clip_sample=False, timestep_spacing="trailing")
    if kind == "ddpm":
        return train
    if kind == "ddim":
        return DDIMScheduler.from_config(train.config)
    if kind == "dpmsolver":
        return DPMSolverMultistepScheduler.from_config(train.config)
    raise ValueError(f"sampler={kind!r}: expected ddpm, ddim or dpmsolver")


# --- semantic tokens --------------------------------------------------------------------------

class _OpenClipTower(nn.Module):
    """An open_clip image tower from a local checkpoint; returns its patch-token map."""

    def __init__(self, model_name: str, checkpoint: str):
        super().__init__()
        import open_clip

        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"open_clip_checkpoint={checkpoint!r}: no such file (no model hub here)")
        model = open_clip.create_model(model_name, pretrained=checkpoint)
        self.visual = model.visual
        self.visual.output_tokens = True
        self.image_mean = getattr(self.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        self.image_std = getattr(self.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, tokens = self.visual(images)
        from world_env_training.models.backbones import _tokens_to_map

        return _tokens_to_map(tokens)


class SemanticEncoder(nn.Module):
    """Frozen pretrained encoder of o_t -> (B, grid^2, dim) projected tokens."""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        self.size, self.grid = config.semantic_image_size, config.semantic_grid
        if config.semantic_encoder == "open_clip":
            self.backbone = _OpenClipTower(config.open_clip_model, config.open_clip_checkpoint)
            mean, std = self.backbone.image_mean, self.backbone.image_std
            with torch.no_grad():
                channels = self.backbone(torch.zeros(1, 3, self.size, self.size)).shape[1]
        else:
            from world_env_training.models.backbones import load_vision_encoder

            encoder = load_vision_encoder(config.semantic_encoder, config.semantic_grid, config.backbone_seed)
            self.backbone, channels = encoder.body, encoder.out_dim
            mean, std = encoder.image_mean, encoder.image_std
        self.backbone.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.proj = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, config.cross_attention_dim))
        self.pos = nn.Parameter(torch.randn(self.grid * self.grid, config.cross_attention_dim) * 0.02)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics stay the pretrained ones
        return self

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        """frame (B, 3, H, W) in [-1, 1]."""
        x = F.interpolate((frame + 1) / 2, size=(self.size, self.size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            features = self.backbone((x - self.mean) / self.std)
        tokens = F.adaptive_avg_pool2d(features, self.grid).flatten(2).transpose(1, 2)
        return self.proj(tokens) + self.pos


# --- geometry tokens --------------------------------------------------------------------------

class _StateToken(nn.Module):
    """One token from s_t and the commanded next state (both normalised)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(14, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, state: torch.Tensor, commanded: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([state, commanded], -1))[:, None]


class RayGeometryEncoder(nn.Module):
    """Geometry map (Pluecker rays + point map) -> grid^2 tokens, plus the robot-state token."""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        dim, self.grid = config.cross_attention_dim, config.geometry_grid
        self.cnn = nn.Sequential(
            nn.Conv2d(GEOMETRY_CHANNELS, 32, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(64, dim, 3, 2, 1))
        self.pos = nn.Parameter(torch.randn(self.grid * self.grid, dim) * 0.02)
        self.state = _StateToken(dim)

    def forward(self, geometry: torch.Tensor, state: torch.Tensor, commanded: torch.Tensor) -> torch.Tensor:
        tokens = F.adaptive_avg_pool2d(self.cnn(geometry), self.grid).flatten(2).transpose(1, 2) + self.pos
        return torch.cat([tokens, self.state(state, commanded)], 1)


class VGGTGeometryEncoder(nn.Module):
    """Adapter for frozen VGGT (facebookresearch/vggt) aggregator tokens of o_t.

    Needs the ``vggt`` package (not on PyPI: install it from its repository) and a local state
    dict (the weights are only on a model hub). Untested here for want of both.
    """

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        try:
            from vggt.models.vggt import VGGT
        except ImportError as err:
            raise ImportError("geometry_encoder='vggt' needs the vggt package (github.com/facebookresearch/vggt, "
                              "not on PyPI); use geometry_encoder='rays' without it") from err
        weights = Path(config.vggt_weights)
        if not weights.is_file():
            raise FileNotFoundError(f"vggt_weights={config.vggt_weights!r}: no such file")
        self.vggt = VGGT()
        self.vggt.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.vggt.requires_grad_(False).eval()
        self.grid, dim = config.geometry_grid, config.cross_attention_dim
        self.proj = nn.Sequential(nn.LayerNorm(2 * 1024), nn.Linear(2 * 1024, dim))
        self.pos = nn.Parameter(torch.randn(self.grid * self.grid, dim) * 0.02)
        self.state = _StateToken(dim)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vggt.eval()
        return self

    def forward(self, frame: torch.Tensor, state: torch.Tensor, commanded: torch.Tensor) -> torch.Tensor:
        x = F.interpolate((frame + 1) / 2, size=(518, 518), mode="bilinear", align_corners=False)
        with torch.no_grad():
            tokens_list, patch_start = self.vggt.aggregator(x[:, None])
        tokens = tokens_list[-1][:, 0, patch_start:]  # (B, 37*37, 2048)
        side = math.isqrt(tokens.shape[1])
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
        tokens = F.adaptive_avg_pool2d(grid, self.grid).flatten(2).transpose(1, 2)
        return torch.cat([self.proj(tokens) + self.pos, self.state(state, commanded)], 1)


# --- the model --------------------------------------------------------------------------------

class WorldModel(nn.Module):
    """Denoiser of the next frame with its condition encoders (see the module docstring).

    Args:
        config: WorldModelConfig.
        processor: WorldModelProcessor with the training states' statistics (default: identity).
        autoencoder: the frozen ``FrameAutoencoder`` of a latent model (``config.latent``).
    """

    def __init__(self, config: WorldModelConfig, processor: WorldModelProcessor | None = None, autoencoder=None):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = config
        self.processor = processor or WorldModelProcessor()
        self.autoencoder = None
        side, channels, self.factor = config.resolution, 3, 1
        if config.latent:
            if autoencoder is None:
                raise ValueError("WorldModelConfig.latent: a latent world model needs its FrameAutoencoder")
            if autoencoder.config.resolution != config.resolution:
                raise ValueError(f"autoencoder: built for {autoencoder.config.resolution}px frames, "
                                 f"the world model predicts {config.resolution}px")
            self.autoencoder = autoencoder.requires_grad_(False).eval()
            side, channels, self.factor = (autoencoder.config.latent_size, autoencoder.config.latent_channels,
                                           autoencoder.config.factor)
            if side % 2 ** (len(config.block_out_channels) - 1):
                raise ValueError(f"block_out_channels: {len(config.block_out_channels)} levels do not fit the "
                                 f"{side}x{side} latent grid (its side must divide by 2^(levels - 1))")
        self.sample_channels = channels
        condition_channels = channels * config.memory_frames + (3 * self.factor ** 2 if config.action_map else 0)
        levels = config.cross_attention_levels
        self.unet = UNet2DConditionModel(
            sample_size=side,
            in_channels=channels + condition_channels,
            out_channels=channels,
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels),
            up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)),
            mid_block_type="UNetMidBlock2DCrossAttn",
            cross_attention_dim=config.cross_attention_dim,
            attention_head_dim=config.attention_heads,  # diffusers' legacy name: it is the head count
            transformer_layers_per_block=config.transformer_layers,
        )
        self.semantic = SemanticEncoder(config) if config.semantic_tokens else None
        if not config.geometry_tokens:
            self.geometry = None
        elif config.geometry_encoder == "vggt":
            self.geometry = VGGTGeometryEncoder(config)
        else:
            self.geometry = RayGeometryEncoder(config)
        self.null_token = (nn.Parameter(torch.zeros(1, 1, config.cross_attention_dim))
                           if self.semantic is None and self.geometry is None else None)
        self._train_scheduler = make_scheduler(config, "ddpm")
        self.channels_last = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()  # frozen
        return self

    def use_channels_last(self, enabled: bool = True) -> "WorldModel":
        """Store the U-Net's convolution weights and feed its input in channels_last (NHWC)
        memory format, the layout oneDNN's CPU convolutions (and cuDNN's bf16 ones) run fastest in."""
        self.channels_last = enabled
        self.unet.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    # --- latents (latent models) --------------------------------------------------------------

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., 3, H, W) frames in [-1, 1] -> (..., C, h, w) latents."""
        lead = frames.shape[:-3]
        return self.autoencoder.encode(frames.flatten(0, len(lead) - 1)).float().unflatten(0, lead)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents).float()

    def history_latents(self, batch: dict) -> torch.Tensor:
        """(B, K, C, h, w): the batch's ``LATENTS``, or the history frames encoded."""
        return batch[LATENTS] if LATENTS in batch else self.encode(batch[HISTORY])

    # --- conditioning -------------------------------------------------------------------------

    def pixel_conditions(self, batch: dict) -> torch.Tensor:
        """(B, condition channels, side, side): history slots (frames, or their latents), then the
        action map (folded into the latent grid for a latent model)."""
        if self.autoencoder is None:
            parts = [batch[HISTORY].flatten(1, 2)]
        else:
            parts = [self.history_latents(batch).flatten(1, 2)]
        if self.config.action_map:
            parts.append(F.pixel_unshuffle(batch[ACTION_MAP], self.factor) if self.factor > 1 else batch[ACTION_MAP])
        return torch.cat(parts, 1)

    def tokens(self, batch: dict) -> torch.Tensor:
        """(B, N, cross_attention_dim) cross-attention tokens: semantic, then geometry."""
        current = batch[HISTORY][:, 0]
        parts = []
        if self.semantic is not None:
            parts.append(self.semantic(current))
        if isinstance(self.geometry, VGGTGeometryEncoder):
            parts.append(self.geometry(current, batch[STATE], batch[COMMANDED]))
        elif self.geometry is not None:
            parts.append(self.geometry(batch[GEOMETRY], batch[STATE], batch[COMMANDED]))
        if not parts:
            return self.null_token.expand(current.shape[0], -1, -1)
        return torch.cat(parts, 1)

    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, pixels: torch.Tensor,
                tokens: torch.Tensor) -> torch.Tensor:
        """The U-Net's v-prediction for the noisy target (B, sample channels, side, side)."""
        x = torch.cat([noisy, pixels], 1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.unet(x, timesteps, encoder_hidden_states=tokens).sample

    def clean_target(self, batch: dict) -> torch.Tensor:
        """What is diffused: the next frame, the residual (o_{t+1} - o_t) / residual_std, or for a
        latent model (z_{t+1} - z_t) / latent_residual_std."""
        if self.autoencoder is not None:
            target = batch[TARGET_LATENT] if TARGET_LATENT in batch else self.encode(batch[TARGET])
            return (target - self.history_latents(batch)[:, 0]) / self.processor.latent_residual_std
        if self.config.predict_residual:
            return (batch[TARGET] - batch[HISTORY][:, 0]) / self.processor.residual_std
        return batch[TARGET]

    def frame_from_sample(self, sample: torch.Tensor, batch: dict) -> torch.Tensor:
        """Inverse of ``clean_target``: the predicted frame in [-1, 1]."""
        return self.outputs_from_sample(sample, batch)["frame"]

    def outputs_from_sample(self, sample: torch.Tensor, batch: dict) -> dict:
        """{"frame"} of a denoised sample; a latent model adds {"latent": z_{t+1}, "decoded":
        D(z_{t+1})}, and its frame is D(z_{t+1}) or, with ``latent_frame="composite"``,
        o_t + D(z_{t+1}) - D(z_t) (D(z_t): the batch's ``DECODED``, or decoded here)."""
        if self.autoencoder is not None:
            current = self.history_latents(batch)[:, 0]
            latent = current + self.processor.latent_residual_std * sample
            if self.config.latent_frame == "decoded":
                decoded = self.decode(latent)
                return {"frame": decoded.clamp(-1, 1), "latent": latent, "decoded": decoded}
            if DECODED in batch:
                decoded, base = self.decode(latent), batch[DECODED]
            else:  # one decoder call for both
                decoded, base = self.decode(torch.cat([latent, current])).chunk(2)
            frame = (batch[HISTORY][:, 0] + decoded - base).clamp(-1, 1)
            return {"frame": frame, "latent": latent, "decoded": decoded}
        if self.config.predict_residual:
            sample = batch[HISTORY][:, 0] + self.processor.residual_std * sample
        return {"frame": sample.clamp(-1, 1)}

    # --- training -----------------------------------------------------------------------------

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """v-prediction loss on a processed batch; returns {"loss"}."""
        if self.autoencoder is not None and LATENTS not in batch:
            batch = {**batch, LATENTS: self.encode(batch[HISTORY])}  # once, for the target and the conditions
        x0 = self.clean_target(batch)
        b = x0.shape[0]
        if self.training and self.config.history_noise_max > 0:
            key, unit = (HISTORY, 1.0) if self.autoencoder is None else (LATENTS, self.processor.latent_std)
            sigma = (torch.rand(b, 1, 1, 1, 1, device=x0.device, generator=generator)
                     * self.config.history_noise_max * unit)
            noise = torch.randn(batch[key].shape, device=x0.device, generator=generator)
            batch = {**batch, key: batch[key] + sigma * noise}
        sched = self._train_scheduler
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        noisy = sched.add_noise(x0, noise, t)
        v_target = sched.get_velocity(x0, noise, t)
        v = self.denoise(noisy, t, self.pixel_conditions(batch), self.tokens(batch))
        return {"loss": F.mse_loss(v, v_target)}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> dict:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.trainable_parameters())
        return {"total": total, "trainable": trainable, "unet": sum(p.numel() for p in self.unet.parameters())}

    # --- persistence --------------------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights saved in model folders: everything but the frozen pretrained encoders."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if not k.startswith(_FROZEN_PREFIXES)}

    def write_files(self, folder: str | Path, weights: dict[str, torch.Tensor] | None = None) -> None:
        """Write the model folder's files into an existing ``folder`` (``weights``: override,
        e.g. EMA weights)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        (folder / CONFIG_NAME).write_text(self.config.to_json())
        self.processor.save(folder)
        self._train_scheduler.save_pretrained(folder / SCHEDULER_DIR)
        tensors = weights if weights is not None else self.trainable_state_dict()
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS_NAME))
        if self.autoencoder is not None:
            (folder / AUTOENCODER_DIR).mkdir(exist_ok=True)
            self.autoencoder.write_files(folder / AUTOENCODER_DIR)

    def save_pretrained(self, path: str | Path) -> None:
        """Write a model folder atomically (a reader sees no folder or a complete one)."""
        from world_env_training.checkpoints import atomic_dir

        with atomic_dir(path) as tmp:
            self.write_files(tmp)

    @classmethod
    def from_pretrained(cls, path: str | Path, device="cpu") -> "WorldModel":
        """Load a model folder, or a training run folder (its newest checkpoint)."""
        from safetensors.torch import load_file

        from world_env_training.checkpoints import latest_checkpoint

        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            newest = latest_checkpoint(path)
            if newest is None:
                raise FileNotFoundError(f"{path}: neither a world-model folder ({CONFIG_NAME}) "
                                        "nor a run with checkpoints")
            path = newest
        config = WorldModelConfig.from_json((path / CONFIG_NAME).read_text())
        autoencoder = None
        if config.latent:
            from world_env_training.models.world_model.autoencoder import FrameAutoencoder

            if not (path / AUTOENCODER_DIR).is_dir():
                raise FileNotFoundError(f"{path}: a latent world model without its {AUTOENCODER_DIR}/ folder")
            autoencoder = FrameAutoencoder.from_pretrained(path / AUTOENCODER_DIR)
        model = cls(config, WorldModelProcessor.load(path), autoencoder)
        weights = load_file(str(path / WEIGHTS_NAME))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not k.startswith(_FROZEN_PREFIXES)]
        if missing or unexpected:
            raise ValueError(f"{path / WEIGHTS_NAME}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.to(device).eval()


# --- the pipeline -----------------------------------------------------------------------------

@torch.no_grad()
def predict_next_frames(model: WorldModel, batch: dict, sampler=None, steps: int | None = None,
                        generator: torch.Generator | None = None, precision: str = "fp32") -> torch.Tensor:
    """Sample o_{t+1} for a processed batch (no TARGET needed): (B, 3, H, W) in [-1, 1].

    sampler: a diffusers scheduler (default ``make_scheduler(config, config.sampler)``);
    steps: denoising steps (default ``config.sampler_steps``); precision: fp32, or bf16
    autocast of the networks (``world_env_training.models.precision``; the sampler's arithmetic stays
    fp32). The conditions are encoded once and reused at every step.
    """
    return predict_next(model, batch, sampler, steps, generator, precision)["frame"]


@torch.no_grad()
def predict_next(model: WorldModel, batch: dict, sampler=None, steps: int | None = None,
                 generator: torch.Generator | None = None, precision: str = "fp32") -> dict:
    """``predict_next_frames`` with the latent model's extras: {"frame"} and, for a latent
    model, {"latent": z_{t+1}, "decoded": D(z_{t+1})}, which a rollout passes back as the next
    step's ``LATENTS`` slot 0 and ``DECODED`` so that nothing is encoded or decoded twice."""
    from world_env_training.models.precision import autocast

    config = model.config
    sampler = sampler or make_scheduler(config, config.sampler)
    device = batch[HISTORY].device
    sampler.set_timesteps(steps or config.sampler_steps, device=device)
    with autocast(device, precision):
        if model.autoencoder is not None and LATENTS not in batch:
            batch = {**batch, LATENTS: model.encode(batch[HISTORY])}
        pixels, tokens = model.pixel_conditions(batch), model.tokens(batch)
    b, _, h, w = pixels.shape
    x = torch.randn((b, model.sample_channels, h, w), device=device, generator=generator) * sampler.init_noise_sigma
    for t in sampler.timesteps:
        model_in = sampler.scale_model_input(x, t)
        with autocast(device, precision):
            v = model.denoise(model_in, t.expand(b).to(device), pixels, tokens)
        x = sampler.step(v.float(), t, x).prev_sample
    with autocast(device, precision):
        return model.outputs_from_sample(x, batch)
