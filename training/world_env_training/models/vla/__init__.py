"""The VLA policy (OpenVLA-OFT style with a Laplace scale head): config, model, processor,
and the chunk sampler every user of the policy draws its actions through."""

from world_env_training.models.vla.configuration_vla import VLAConfig
from world_env_training.models.vla.modeling_vla import VLAPolicy
from world_env_training.models.vla.processor_vla import VLAProcessor
from world_env_training.models.vla.sampling import ChunkSample, ChunkSampler, chunk_log_prob, clip_actions

__all__ = ["ChunkSample", "ChunkSampler", "VLAConfig", "VLAPolicy", "VLAProcessor", "chunk_log_prob", "clip_actions"]
