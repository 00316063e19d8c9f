"""The one path from a policy's output to the chunk a robot runs: predict, sample, score, clip.

LOOP is right only while three numbers agree: the log-probability a rollout records for the
chunk it sampled, the one the PPO update recomputes (``chunk_log_prob`` on the same actions)
and the one the policy node publishes. Every user (LOOP's rollouts, the evaluation policy,
the ROS policy node) therefore draws its chunks through ``ChunkSampler``.

A chunk is scored as sampled, before clipping, over all of its steps (also those a step limit
leaves unexecuted): clipping changes what runs, not what the policy chose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from world_env_training.models.vla.modeling_vla import laplace_log_prob

#: LIBERO's action range: each of the 7 dimensions is clipped to [-ACTION_LIMIT, ACTION_LIMIT].
ACTION_LIMIT = 1.0


def clip_actions(actions) -> np.ndarray:
    """Actions as they are executed: clipped to LIBERO's [-1, 1] (any shape, float64 copy)."""
    return np.clip(np.asarray(actions, dtype=np.float64), -ACTION_LIMIT, ACTION_LIMIT)


def correlate(innovations: torch.Tensor, correlation: float) -> torch.Tensor:
    """(B, K, D) independent innovations -> the AR(1) noise of a chunk along its K steps:
    e_0 = i_0, e_k = rho e_(k-1) + sqrt(1 - rho^2) i_k. Each step keeps the innovations'
    variance; neighbouring steps are correlated by rho."""
    if correlation == 0.0:
        return innovations
    keep = math.sqrt(1.0 - correlation ** 2)
    steps = [innovations[:, 0]]
    for k in range(1, innovations.shape[1]):
        steps.append(correlation * steps[-1] + keep * innovations[:, k])
    return torch.stack(steps, dim=1)


def decorrelate(noise: torch.Tensor, correlation: float) -> torch.Tensor:
    """The inverse of ``correlate``: a chunk's noise -> the innovations that made it."""
    if correlation == 0.0:
        return noise
    keep = math.sqrt(1.0 - correlation ** 2)
    return torch.cat([noise[:, :1], (noise[:, 1:] - correlation * noise[:, :-1]) / keep], dim=1)


def chunk_log_prob(actions: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor,
                   correlation: float = 0.0) -> torch.Tensor:
    """(B, K, 7) chunks -> (B,) joint log-likelihood of each whole chunk (differentiable).

    correlation 0: the steps are independent Laplace(mu, b). Otherwise the chunk's noise
    a - mu is ``correlate``d Laplace innovations, and its density is the innovations' times the
    Jacobian of the map, sqrt(1 - rho^2)^-(K-1) per action dimension.
    """
    if correlation == 0.0:
        return laplace_log_prob(actions, mu, log_scale).sum(-1)
    innovations = decorrelate(actions - mu, correlation)
    log_jacobian = (actions.shape[1] - 1) * actions.shape[2] * 0.5 * math.log(1.0 - correlation ** 2)
    return laplace_log_prob(innovations, torch.zeros_like(mu), log_scale).sum(-1) - log_jacobian


def check_correlation(correlation: float) -> float:
    """A noise correlation LOOP can score: in [0, 1) (1 would make a chunk's density degenerate)."""
    if not 0.0 <= correlation < 1.0:
        raise ValueError(f"correlation={correlation}: expected a number in [0, 1) "
                         "(0: independent steps; 1 would draw one offset per chunk, which has no density)")
    return float(correlation)


def tempered(log_scale: torch.Tensor, temperature: float) -> torch.Tensor:
    """log of temperature * b: the Laplace law LOOP samples from and scores at ``temperature``."""
    return log_scale if temperature == 1.0 else log_scale + math.log(temperature)


@dataclass
class ChunkSample:
    """A batch of chunks drawn by ``ChunkSampler``.

    actions: (B, K, 7) as sampled (or the means, when not sampling), unclipped.
    log_prob: (B,) joint log-likelihood of ``actions`` under the policy that produced them.
    scale: (B,) mean predicted Laplace scale b (LIBERO units), a diagnostic of exploration.
    mu, log_scale: (B, K, 7) the distribution itself.
    """

    actions: torch.Tensor
    log_prob: torch.Tensor
    scale: torch.Tensor
    mu: torch.Tensor
    log_scale: torch.Tensor

    def executed(self, steps: int | None = None) -> np.ndarray:
        """(B, steps, 7) float64 actions as the robot runs them: the first ``steps``, clipped."""
        return clip_actions(self.actions[:, :steps].detach().cpu().numpy())


class ChunkSampler:
    """Draws action chunks from a ``VLAPolicy``.

    sample: draw each chunk from the policy's Laplace law (exploration, LOOP's rollouts);
        False executes the means (log_prob is then the means' own likelihood).
    generator: the torch generator the draws use (so callers control the noise); with none, one
        seeded by ``seed`` on the model's device.
    temperature: the law is Laplace(mu, temperature * b), for drawing and for scoring alike
        (``tempered``); 1 is the policy's own law.
    correlation: rho of the noise along a chunk's steps (``correlate``; 0: independent steps,
        the policy's own law), for drawing and scoring alike.
    """

    def __init__(self, model, sample: bool = False, generator: torch.Generator | None = None, seed: int = 0,
                 temperature: float = 1.0, correlation: float = 0.0):
        if not temperature > 0:
            raise ValueError(f"temperature={temperature}: expected a positive number")
        self.model, self.sample, self.temperature = model, bool(sample), float(temperature)
        self.correlation = check_correlation(correlation)
        self.generator = generator if generator is not None else torch.Generator(device=model.device).manual_seed(seed)

    @property
    def chunk_size(self) -> int:
        return int(self.model.config.chunk_size)

    @torch.no_grad()
    def __call__(self, images, states, instructions: list[str]) -> ChunkSample:
        """images (B, H, W, 3) uint8, states (B, 7), B instructions -> a ``ChunkSample``."""
        mu, log_scale = self.model.predict_action_chunk(images, np.asarray(states, dtype=np.float32), instructions)
        log_scale = tempered(log_scale, self.temperature)
        actions = mu
        if self.sample and self.correlation == 0.0:
            actions = self.model.sample(mu, log_scale, self.generator)
        elif self.sample:
            innovations = self.model.sample(torch.zeros_like(mu), log_scale, self.generator)
            actions = mu + correlate(innovations, self.correlation)
        return ChunkSample(actions=actions, log_prob=chunk_log_prob(actions, mu, log_scale, self.correlation),
                           scale=log_scale.exp().mean(dim=(1, 2)), mu=mu, log_scale=log_scale)
