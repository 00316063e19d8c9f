"""The VLA policy (OpenVLA-OFT style with a Laplace scale head): config, model, processor."""

from world_env_training.vla.configuration_vla import VLAConfig
from world_env_training.vla.modeling_vla import VLAPolicy
from world_env_training.vla.processor_vla import VLAProcessor

__all__ = ["VLAConfig", "VLAPolicy", "VLAProcessor"]
