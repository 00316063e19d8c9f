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

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from world_env_training.checkpoints import (OPTIMIZER_FILE, TRAIN_STATE_FILE, latest_checkpoint, remove_stale,
                                            save_training_checkpoint)
from world_env_training.configs import PostTrainConfig
from world_env_training.loop import ppo_update, rloo_advantages
from world_env_training.post_train import write_metrics


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
        from world_env_training.backbones import resolve_device
        from world_env_training.vla import VLAPolicy

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.run_dir = Path(cfg.output_dir)
        remove_stale(self.run_dir)
        resume = latest_checkpoint(self.run_dir)
        self.model = VLAPolicy.from_pretrained(resume if resume is not None else cfg.policy, device=self.device)
        groups = [{"params": self.model.lora_parameters(), "lr": cfg.lr_lora},
                  {"params": self.model.head_parameters(), "lr": cfg.lr_heads}]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        self.update_count = 0
        self.checkpoint = cfg.policy  # the weights the policy node should be running
        if resume is not None:
            self.optimizer.load_state_dict(torch.load(resume / OPTIMIZER_FILE, map_location=self.device,
                                                      weights_only=True))
            self.update_count = json.loads((resume / TRAIN_STATE_FILE).read_text())["step"]
            self.checkpoint = str(resume)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "train_config.yaml").write_text(cfg.to_yaml())
        write_metrics(self.run_dir, self.update_count)  # a resume drops the lines of updates it redoes
        self.groups: list[list[Episode]] = []

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
        cfg, n = self.cfg, self.cfg.rollouts_per_state
        groups = [g[:n] for g in self.groups[:cfg.batch_size]]
        self.groups = []
        episodes = [e for g in groups for e in g]
        returns = np.array([[(1.0 if e.fired else 0.0) if cfg.binary_reward else e.ret for e in g] for g in groups],
                           np.float32)
        advantages = rloo_advantages(torch.from_numpy(returns)).numpy().reshape(-1)
        rows = [(i, c) for i, e in enumerate(episodes) for c in range(len(e.actions))]
        record = {"update": self.update_count + 1, "return_mean": float(returns.mean()),
                  "fired_rate": float(np.mean([e.fired for e in episodes])),
                  "advantage_abs": float(np.abs(advantages).mean()), "chunks": len(rows), "episodes": len(episodes)}
        if rows:
            samples = {"images": np.stack([episodes[i].images[c] for i, c in rows]),
                       "states": np.stack([episodes[i].states[c] for i, c in rows]),
                       "instructions": [episodes[i].instruction for i, _ in rows],
                       "actions": np.stack([episodes[i].actions[c] for i, c in rows])}
            from world_env_training.loop import chunk_log_probs

            self.model.eval()
            with torch.no_grad():
                old, scale = chunk_log_probs(self.model.action_distribution, self.model, samples["images"],
                                             samples["states"], samples["instructions"], samples["actions"])
            published = np.array([episodes[i].published_log_probs[c] for i, c in rows])
            gaps = np.abs(published - old.cpu().numpy())
            sums = ppo_update(self.model, self.model.action_distribution, self.optimizer,
                              self.model.lora_parameters() + self.model.head_parameters(), samples, old,
                              torch.from_numpy(advantages[[i for i, _ in rows]]).to(self.device), cfg.clip_eps,
                              cfg.ppo_epochs, cfg.minibatches, cfg.grad_clip, [cfg.seed, self.update_count],
                              cfg.target_kl)
            per = max(sums["minibatches"], 1.0)
            record.update(loss=sums["loss"] / per, clip_fraction=sums["clip_fraction"] / per,
                          approx_kl=sums["approx_kl"] / per, scale=float(scale.mean()), steps=int(sums["minibatches"]),
                          kl_stopped=bool(sums["kl_stopped"]), stop_kl=sums["stop_kl"] if sums["kl_stopped"] else None,
                          log_prob_gap=float(np.nanmax(gaps)) if np.isfinite(gaps).any() else None)
        self.update_count += 1
        write_metrics(self.run_dir, self.update_count, record)  # before the checkpoint, as post-train
        path = save_training_checkpoint(self.run_dir, self.update_count, self.model.write_files, self.optimizer,
                                        cfg.to_dict(), cfg.keep_checkpoints)
        self.checkpoint = str(path)
        return record
