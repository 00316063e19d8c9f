"""The action-conditioned diffusion world model: config, model, processor."""

from world_env_training.models.world_model.configuration_world_model import WorldModelConfig
from world_env_training.models.world_model.modeling_world_model import WorldModel, make_scheduler, predict_next_frames
from world_env_training.models.world_model.processor_world_model import WorldModelProcessor

__all__ = ["WorldModelConfig", "WorldModel", "WorldModelProcessor", "make_scheduler", "predict_next_frames"]
