"""The frame autoencoder of the latent world model: our own frames in, a small latent grid out.

``FrameAutoencoder`` wraps diffusers' ``AutoencoderTiny`` (the TAESD architecture: plain
convolution blocks, no attention, no KL term) sized for 64x64 robot frames: ``len(channels) - 1``
stride-2 levels, so the default 64x64x3 frame becomes a 16x16x8 latent (6x fewer numbers). It is
trained by ``world-env train-autoencoder`` on the demonstration and exploration frames (L1 +
MSE reconstruction); the world model then denoises latents at 16x16, where one U-Net call costs a
small fraction of a 64x64 one, and adds the decoded change to the real previous frame, so that
what does not move stays exact (``WorldModel.frame_from_sample``).

Model folder: ``config.json`` (``AutoencoderConfig``, in ``configuration_world_model``) and
``model.safetensors``. A latent world model keeps a copy in its own folder (``autoencoder/``),
so it loads without the training run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from world_env_training.models.world_model.configuration_world_model import AutoencoderConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class FrameAutoencoder(nn.Module):
    """Frames in [-1, 1] (B, 3, H, W) <-> latents (B, C, H/f, W/f); see the module docstring."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        from diffusers import AutoencoderTiny

        self.config = config
        self.vae = AutoencoderTiny(
            encoder_block_out_channels=tuple(config.channels), decoder_block_out_channels=tuple(config.channels),
            num_encoder_blocks=tuple(config.blocks), num_decoder_blocks=tuple(config.decoder_blocks),
            latent_channels=config.latent_channels)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(frames).latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample

    def forward(self, frames: torch.Tensor) -> dict:
        """Reconstruction loss of a batch of frames: {"loss" (L1 + MSE), "reconstruction"}."""
        out = self.decode(self.encode(frames))
        return {"loss": F.l1_loss(out, frames) + F.mse_loss(out, frames), "reconstruction": out}

    def save_pretrained(self, path: str | Path) -> None:
        """Write the folder atomically."""
        from world_env_training.checkpoints import atomic_dir

        with atomic_dir(path) as tmp:
            self.write_files(tmp)

    def write_files(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        (folder / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=1))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path: str | Path, device="cpu") -> "FrameAutoencoder":
        """Load an autoencoder folder, or a ``train-autoencoder`` run (its newest checkpoint)."""
        from safetensors.torch import load_file

        from world_env_training.checkpoints import latest_checkpoint

        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            newest = latest_checkpoint(path)
            if newest is None:
                raise FileNotFoundError(f"{path}: neither an autoencoder folder ({CONFIG_NAME}) "
                                        "nor a run with checkpoints")
            path = newest
        config = AutoencoderConfig.from_dict(json.loads((path / CONFIG_NAME).read_text()))
        model = cls(config)
        missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS_NAME)), strict=False)
        if missing or unexpected:
            raise ValueError(f"{path / WEIGHTS_NAME}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.to(device).eval()
