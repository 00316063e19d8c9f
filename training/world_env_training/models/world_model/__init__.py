"""The action-conditioned diffusion world model: config, model, processor."""

from world_env_training.models.world_model.autoencoder import FrameAutoencoder
from world_env_training.models.world_model.configuration_world_model import AutoencoderConfig, WorldModelConfig
from world_env_training.models.world_model.modeling_world_model import (
    WorldModel, make_scheduler, predict_next, predict_next_frames,
)
from world_env_training.models.world_model.processor_world_model import WorldModelProcessor

__all__ = ["AutoencoderConfig", "FrameAutoencoder", "WorldModelConfig", "WorldModel", "WorldModelProcessor",
           "make_scheduler", "predict_next", "predict_next_frames"]
