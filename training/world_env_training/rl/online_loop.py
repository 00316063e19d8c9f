"""LOOP on episodes that arrive over the wire: the core of the ROS ``loop_trainer_node``.

In imagined mode through the ROS graph, rollouts are not produced in-process (``post_train``)
but by the nodes: the world simulator predicts frames, the policy node samples chunks and
publishes each with the observation it came from (``ActionChunk``), the reflector scores the
frames. ``OnlineLOOP`` gathers those episodes in groups of N that start from the same initial
state, and once ``batch_size`` groups are complete runs the same update as ``post_train``:
leave-one-out advantages within each group, PPO on the chunks' likelihood ratios. Old
log-likelihoods are recomputed here under the weights that produced the chunks (the trainer
holds them: it wrote them), not taken from the messages; the published ones are compared as a
check (``log_prob_gap``).

Files, in ``cfg.output_dir`` as ``post-train`` writes them: ``checkpoints/step_N`` (atomic;
a restart resumes from the newest), ``metrics.jsonl``, ``train_config.yaml``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from world_env_training.configs import PostTrainConfig
from world_env_training.rl.loop import chunk_log_probs
from world_env_training.rl.loop_runner import LoopLearner, ppo_figures


@dataclass
class Episode:
    """One imagined episode as the graph produced it."""

    images: list[np.ndarray] = field(default_factory=list)   # per chunk (H, W, 3) uint8
    states: list[np.ndarray] = field(default_factory=list)   # per chunk (7,)
    actions: list[np.ndarray] = field(default_factory=list)  # per chunk (K, 7), as sampled
    published_log_probs: list[float] = field(default_factory=list)
    instruction: str = ""
    ret: float = 0.0
    fired: bool = False

    def add_chunk(self, image, state, actions, log_prob: float) -> None:
        self.images.append(np.asarray(image, np.uint8))
        self.states.append(np.asarray(state, np.float32))
        self.actions.append(np.asarray(actions, np.float32))
        self.published_log_probs.append(float(log_prob))


class OnlineLOOP:
    """Groups of N episodes in, PPO updates out (module docstring).

    Uses these ``PostTrainConfig`` fields: policy (start weights), output_dir,
    rollouts_per_state, batch_size, updates, clip_eps, lr_lora, lr_heads, ppo_epochs, minibatches,
    grad_clip, target_kl, binary_reward, keep_checkpoints, seed, device.
    """

    def __init__(self, cfg: PostTrainConfig):
        from world_env_training.models.backbones import resolve_device

        if cfg.temperature != 1.0:
            raise ValueError(f"temperature={cfg.temperature}: the policy node samples the policy's own law "
                             "(temperature 1), which the trainer must score; tempered rollouts are post-train's")
        if cfg.correlation != 0.0:
            raise ValueError(f"correlation={cfg.correlation}: the policy node draws independent steps, which the "
                             "trainer must score; correlated rollouts are post-train's")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.learner = LoopLearner(cfg, self.device)
        self.model = self.learner.model
        self.groups: list[list[Episode]] = []

    @property
    def update_count(self) -> int:
        return self.learner.update_count

    @property
    def checkpoint(self) -> str:
        """The weights the policy node should be running."""
        return self.learner.checkpoint

    @property
    def done(self) -> bool:
        return self.update_count >= self.cfg.updates

    def add_episode(self, group: int, episode: Episode) -> None:
        """File a finished episode under ``group`` (the index of its initial state in this batch)."""
        while len(self.groups) <= group:
            self.groups.append([])
        self.groups[group].append(episode)

    def ready(self) -> bool:
        n = self.cfg.rollouts_per_state
        return len(self.groups) >= self.cfg.batch_size and all(len(g) >= n for g in self.groups[:self.cfg.batch_size])

    def update(self) -> dict:
        """One LOOP update on the gathered groups; saves a checkpoint; returns the metrics."""
        t0 = time.perf_counter()
        cfg, n = self.cfg, self.cfg.rollouts_per_state
        groups = [g[:n] for g in self.groups[:cfg.batch_size]]
        self.groups = []
        episodes = [e for g in groups for e in g]
        rewards = np.array([[e.ret for e in g] for g in groups], np.float32)
        fired = np.array([[e.fired for e in g] for g in groups], bool)
        rows = [(i, c) for i, e in enumerate(episodes) for c in range(len(e.actions))]
        samples, old, scale, gap = {}, torch.zeros(0), float("nan"), None
        if rows:
            samples = {"images": np.stack([episodes[i].images[c] for i, c in rows]),
                       "states": np.stack([episodes[i].states[c] for i, c in rows]),
                       "instructions": [episodes[i].instruction for i, _ in rows],
                       "actions": np.stack([episodes[i].actions[c] for i, c in rows])}
            # Old log-likelihoods under the weights that produced the chunks (this learner wrote
            # them); the published ones are compared as a check.
            self.model.eval()
            with torch.no_grad():
                old, scales = chunk_log_probs(self.model.action_distribution, self.model, samples["images"],
                                              samples["states"], samples["instructions"], samples["actions"])
            scale = float(scales.mean())
            gaps = np.abs(np.array([episodes[i].published_log_probs[c] for i, c in rows]) - old.cpu().numpy())
            gap = float(np.nanmax(gaps)) if np.isfinite(gaps).any() else None
        returns = self.learner.returns(rewards, fired)
        sums = self.learner.update(samples, old, returns, np.array([i for i, _ in rows], int))
        record = {"env": "ros_graph", "episodes": len(episodes), "return_mean": float(returns.mean()),
                  "fired_rate": float(fired.mean()), "episode_length": None, **ppo_figures(sums, len(episodes)),
                  "scale": scale, "chunks": len(rows), "ppo_steps": int(sums["minibatches"]),
                  "stop_kl": sums["stop_kl"] if sums["kl_stopped"] else None, "log_prob_gap": gap,
                  "seconds": time.perf_counter() - t0}
        self.learner.finish_update(record)
        return {**record, "update": self.update_count}
