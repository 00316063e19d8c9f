"""What every LOOP run shares, whoever produces its rollouts: ``post-train`` (in-process, in
imagination or in LIBERO) and the ROS ``loop_trainer_node`` (episodes from the node graph).

- ``LoopLearner``: the policy being trained and its optimiser, resumed from the run folder's
  newest checkpoint; one update from chunk samples and per-episode returns (leave-one-out
  advantages, PPO); the update's metrics line (one set of keys, ``METRIC_KEYS``) written before
  its checkpoint, so that no checkpointed update lacks its line.
- ``draw_starts``: which initial states update u uses, one seeded rule for both runners, so a
  resumed run draws what an uninterrupted one would.
- ``load_start_states``: the initial states, the first observation of each dataset episode.
- ``write_metrics``: ``metrics.jsonl``, truncated on resume to the updates that are kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from world_env_training.checkpoints import (OPTIMIZER_FILE, TRAIN_STATE_FILE, latest_checkpoint, remove_stale,
                                            save_training_checkpoint)
from world_env_training.rl.loop import StartState, ppo_update, rloo_advantages

METRICS_FILE = "metrics.jsonl"
#: Keys of every metrics.jsonl line (values None where a runner has no such figure).
METRIC_KEYS = ("update", "env", "episodes", "return_mean", "fired_rate", "episode_length", "advantage_abs",
               "chunks", "loss", "clip_fraction", "approx_kl", "scale", "ppo_steps", "stepped", "kl_stopped",
               "stop_kl", "frames_per_s", "seconds", "log_prob_gap")


def seed_of(*parts: int) -> int:
    """One integer seed from several (run seed, update, rank, purpose)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def draw_starts(count: int, batch_size: int, seed: int, update: int) -> np.ndarray:
    """Indices of the ``batch_size`` initial states (of ``count``) update ``update`` starts from:
    uniform, without replacement unless there are fewer states than the batch."""
    rng = np.random.default_rng(seed_of(seed, update))
    return rng.choice(count, size=batch_size, replace=count < batch_size)


def load_start_states(path: str) -> list[StartState]:
    """The first observation of every episode of the dataset at ``path``, with the LIBERO init
    state it began from (where it has one)."""
    from world_env_training.data.dataset import Dataset

    dataset = Dataset(path)
    starts = []
    for i in range(len(dataset)):
        episode = dataset[i]
        if not episode.camera:
            raise ValueError(f"{path}: episode {dataset.entry(i)['key']} has no camera model (needed for action maps)")
        starts.append(StartState(frame=episode.frames[0], state=episode.states[0].astype(np.float32),
                                 instruction=episode.instruction, camera=episode.camera, key=dataset.entry(i)["key"],
                                 suite=episode.suite, task_id=episode.task_id, init_state_id=episode.init_state_id,
                                 joints=episode.joint_positions[0].astype(np.float32)))
    if not starts:
        raise ValueError(f"{path}: no episodes to start imagined rollouts from")
    return starts


def write_metrics(run_dir: Path, start: int, record: dict | None = None) -> None:
    """Keep ``metrics.jsonl`` lines of updates up to ``start`` (a resume drops the rest); append ``record``."""
    path = Path(run_dir) / METRICS_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    kept = [line for line in lines if line.strip() and json.loads(line)["update"] <= start]
    if record is None:
        if len(kept) != len(lines):
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
        return
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


class LoopLearner:
    """The policy LOOP trains, its optimiser and its run folder (module docstring).

    cfg: ``PostTrainConfig`` (policy, output_dir, lr_lora, lr_heads, clip_eps, ppo_epochs,
    minibatches, grad_clip, target_kl, temperature, correlation, binary_reward, keep_checkpoints,
    seed). ``writer``: only the process that writes files (rank 0) passes True.
    """

    def __init__(self, cfg, device: torch.device, writer: bool = True):
        from world_env_training.models.vla import VLAPolicy

        self.cfg, self.device, self.writer = cfg, device, writer
        self.run_dir = Path(cfg.output_dir)
        if writer:
            remove_stale(self.run_dir)
        self.resumed_from = latest_checkpoint(self.run_dir)
        torch.manual_seed(cfg.seed)
        self.model = VLAPolicy.from_pretrained(self.resumed_from if self.resumed_from is not None else cfg.policy,
                                               device=device)
        groups = [{"params": self.model.lora_parameters(), "lr": cfg.lr_lora},
                  {"params": self.model.head_parameters(), "lr": cfg.lr_heads}]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        self.trainable = self.model.lora_parameters() + self.model.head_parameters()
        self.update_count = 0
        #: the weights rollouts should be drawn with (what a policy node must be running)
        self.checkpoint = cfg.policy
        if self.resumed_from is not None:
            self.optimizer.load_state_dict(torch.load(self.resumed_from / OPTIMIZER_FILE, map_location=device,
                                                      weights_only=True))
            self.update_count = json.loads((self.resumed_from / TRAIN_STATE_FILE).read_text())["step"]
            self.checkpoint = str(self.resumed_from)
        if writer:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "train_config.yaml").write_text(cfg.to_yaml())
            write_metrics(self.run_dir, self.update_count)  # a resume drops the lines of updates it redoes

    def returns(self, rewards: np.ndarray, fired: np.ndarray) -> np.ndarray:
        """(S, N) returns from the final rewards and whether the episode was judged done
        (``binary_reward``: 1 if done, else 0)."""
        return (fired.astype(np.float32) if self.cfg.binary_reward else rewards.astype(np.float32))

    def update(self, samples: dict, old_log_probs: torch.Tensor, returns: np.ndarray, chunk_episode: np.ndarray,
               distribution=None, seed=None, agree=lambda value: value, step: bool = True) -> dict:
        """One LOOP update: RLOO advantages of the (S, N) ``returns`` (episode e = s * N + n),
        each chunk taking its episode's (``chunk_episode``), then PPO on ``samples`` (images,
        states, instructions, actions of the chunks) against ``old_log_probs``.
        distribution: what computes the policy's law (its DDP wrapper under several processes).
        step: False skips PPO (a process with no chunks when its peers have none either).
        PPO is also skipped when no process has a nonzero advantage (every state's rollouts
        scored alike, e.g. all failed): the gradient is then zero, but Adam's momentum from
        earlier updates would still move the policy, with no signal behind the move.
        Returns the sums of the PPO figures and ``adv_abs``, the sum of |advantage| per episode."""
        cfg = self.cfg
        advantages = rloo_advantages(torch.from_numpy(np.asarray(returns, np.float32))).numpy().reshape(-1)
        sums = {"loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0, "minibatches": 0.0, "kl_stopped": 0.0,
                "stop_kl": 0.0}
        adv_abs = float(np.abs(advantages).sum())
        signal = agree(adv_abs) > 0  # agreed, so that all processes skip together
        if step and len(old_log_probs) and signal:
            sums.update(ppo_update(self.model, distribution or self.model.action_distribution, self.optimizer,
                                   self.trainable, samples, old_log_probs,
                                   torch.from_numpy(advantages[chunk_episode]).to(self.device), cfg.clip_eps,
                                   cfg.ppo_epochs, cfg.minibatches, cfg.grad_clip,
                                   seed if seed is not None else [cfg.seed, self.update_count], cfg.target_kl, agree,
                                   cfg.temperature, cfg.correlation))
        sums["adv_abs"] = adv_abs
        return sums

    def finish_update(self, record: dict, save: bool = True) -> Path | None:
        """Count the update, write its metrics line (every ``METRIC_KEYS`` key), then (``save``)
        its checkpoint; returns the checkpoint folder written, if any."""
        self.update_count += 1
        line = {key: record.get(key) for key in METRIC_KEYS}
        line["update"] = self.update_count
        unknown = sorted(set(record) - set(METRIC_KEYS))
        if unknown:
            raise KeyError(f"metrics {unknown} are not in METRIC_KEYS")
        path = None
        if self.writer:
            write_metrics(self.run_dir, self.update_count, line)
            if save:
                path = save_training_checkpoint(self.run_dir, self.update_count, self.model.write_files,
                                                self.optimizer, self.cfg.to_dict(), self.cfg.keep_checkpoints)
                self.checkpoint = str(path)
        return path


def ppo_figures(sums: dict, episodes: float) -> dict:
    """Per-update averages of ``LoopLearner.update``'s sums (summed over processes)."""
    per = max(sums["minibatches"], 1.0)
    return {"loss": sums["loss"] / per, "clip_fraction": sums["clip_fraction"] / per,
            "approx_kl": sums["approx_kl"] / per, "advantage_abs": sums["adv_abs"] / max(episodes, 1.0),
            "stepped": sums["minibatches"] > 0, "kl_stopped": sums["kl_stopped"] > 0}


def suite_step_limit(starts: list[StartState], source: str) -> int:
    """LIBERO's step limit for the start states' suite (``max_steps=0``); one suite only."""
    from world_env_libero.env import MAX_STEPS

    suites = {s.suite for s in starts}
    if len(suites) != 1 or not suites <= set(MAX_STEPS):
        raise ValueError(f"max_steps=0 takes the LIBERO suite's step limit, but the start states in {source} "
                         f"come from {sorted(suites)}; give max_steps")
    return MAX_STEPS[suites.pop()]
