"""The Instant Reflector (frozen encoder + frozen LLM + light reward head): config, model, processor."""

from world_env_training.models.reflector.configuration_reflector import ReflectorConfig
from world_env_training.models.reflector.modeling_reflector import Reflector, ReflectorSession
from world_env_training.models.reflector.processor_reflector import ReflectorProcessor

__all__ = ["ReflectorConfig", "Reflector", "ReflectorProcessor", "ReflectorSession"]
