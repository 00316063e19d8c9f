"""``world-env train-sft``: supervised fine-tuning of the VLA policy on demonstrations.

Read top to bottom: setup, data, model (fresh or resumed), optimiser, then the training loop.

Samples. Every step t of every episode (t < T) is one sample: frame o_t, state s_t and the
instruction as input, actions a_t .. a_{t+K-1} (K = chunk_size) as target. Near the episode's
end the chunk runs past a_{T-1}: those entries repeat the last action (so shapes stay fixed)
and are flagged in ``action_is_pad``, which removes them from the loss (LeRobot's choice,
rather than teaching the model to repeat the last action). Batches are drawn uniformly with
replacement by a generator seeded with (seed, step), so a resumed run draws exactly the
batches an uninterrupted run would have.

Loss. ``VLAPolicy.forward``: L1 on the mean plus the Laplace NLL of the scale head, whose
gradient does not reach the mean (see there). AdamW with two parameter groups, LoRA
(``lr_lora``) and everything else trained (``lr_heads``); linear warm-up, cosine decay to a
tenth of the peak.

Checkpoints. Every ``save_every`` steps and at the end, ``OUTPUT/checkpoints/step_N/`` is
written atomically (model folder files + ``optimizer.pt`` + ``train_state.json``) and then
``checkpoints/latest`` is pointed at it. A run killed at any moment keeps every checkpoint
that was complete; starting the same command again resumes from the newest one (model,
optimiser state, step counter; tensorboard events after that step are purged). The run
folder itself loads with ``VLAPolicy.from_pretrained(OUTPUT)`` / ``make_policy(OUTPUT)``.

Augmentation. ``augment_shift`` > 0: each frame is edge-padded by that many pixels and
cropped back at a random offset (DrQ's random shift), a cheap guard against overfitting a
handful of demonstrations to exact pixel positions.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from world_env_training.models.backbones import resolve_device
from world_env_training.checkpoints import (OPTIMIZER_FILE, TRAIN_STATE_FILE, latest_checkpoint, remove_stale,
                                            save_training_checkpoint, warmup_cosine)
from world_env_training.configs import TrainSFTConfig, model_config_values
from world_env_training.data.dataset import Dataset, DatasetError

_SFT_OWNED = ("vision_encoder", "llm", "lora_rank", "chunk_size")  # set by TrainSFTConfig, not the file


def policy_config(cfg: TrainSFTConfig):
    """The VLAConfig of this run: ``cfg.policy_config``'s fields plus the four set in ``cfg``."""
    from world_env_training.models.vla import VLAConfig

    return VLAConfig.from_dict(model_config_values(cfg, "policy_config", _SFT_OWNED, "VLAConfig", "train-sft"))


class ChunkSamples:
    """All (episode, t) training samples of a dataset, held in memory (uint8 frames)."""

    def __init__(self, dataset: Dataset, chunk_size: int):
        self.chunk_size = chunk_size
        self.frames, self.states, self.actions, self.instructions = [], [], [], []
        rows = []
        for i in range(len(dataset)):
            arrays = dataset.load_arrays(i, ("frames", "states", "actions"))
            steps = len(arrays["actions"])
            if steps == 0:
                continue
            rows += [(len(self.frames), t) for t in range(steps)]
            self.frames.append(arrays["frames"])
            self.states.append(arrays["states"])
            self.actions.append(arrays["actions"])
            self.instructions.append(dataset.entry(i)["instruction"])
        if not rows:
            raise ValueError(f"{dataset.path}: no episode with at least one action to train on")
        self.rows = np.array(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, batch_size: int, rng: np.random.Generator, shift: int = 0) -> dict:
        """A random batch of raw inputs and targets, as ``VLAProcessor.__call__`` takes them."""
        picks = self.rows[rng.integers(0, len(self.rows), batch_size)]
        images, states, instructions, actions, pads = [], [], [], [], []
        offsets = np.arange(self.chunk_size)
        for episode, t in picks:
            acts = self.actions[episode]
            steps = t + offsets
            image = self.frames[episode][t]
            if shift:
                image = random_shift(image, shift, rng)
            images.append(image)
            states.append(self.states[episode][t])
            instructions.append(self.instructions[episode])
            actions.append(acts[np.minimum(steps, len(acts) - 1)])
            pads.append(steps >= len(acts))
        return {"images": np.stack(images), "states": np.stack(states), "instructions": instructions,
                "actions": np.stack(actions), "action_is_pad": np.stack(pads)}


def random_shift(image: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """Edge-pad (H, W, 3) by ``shift`` pixels and crop back to (H, W) at a random offset."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((shift, shift), (shift, shift), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * shift + 1, 2)
    return padded[dy:dy + h, dx:dx + w]


def train(cfg: TrainSFTConfig) -> Path:
    """Run (or resume) SFT; returns the newest checkpoint folder."""
    from torch.utils.tensorboard import SummaryWriter

    from world_env_training.models.vla import VLAPolicy
    from world_env_training.models.vla.processor_vla import compute_stats

    # --- setup ------------------------------------------------------------------------------
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.output_dir)
    remove_stale(run_dir)
    vla_config = policy_config(cfg)
    dataset = Dataset(cfg.demos)
    samples = ChunkSamples(dataset, vla_config.chunk_size)

    # --- model: resume from the newest checkpoint, or build fresh ----------------------------
    torch.manual_seed(cfg.seed)
    resume = latest_checkpoint(run_dir)
    if resume is not None:
        model = VLAPolicy.from_pretrained(resume, device=device)
        changed = {k: (v, vla_config.to_dict()[k]) for k, v in model.config.to_dict().items()
                   if vla_config.to_dict()[k] != v}
        if changed:
            raise ValueError(f"{run_dir}: its checkpoints were trained with another policy configuration "
                             f"(field: (checkpoint, now) {changed}); use a new output_dir")
        start = json.loads((resume / TRAIN_STATE_FILE).read_text())["step"]
    else:
        model = VLAPolicy(vla_config, compute_stats(dataset, vla_config)).to(device)
        start = 0
    model.train()

    # --- optimiser ----------------------------------------------------------------------------
    groups = [{"params": model.lora_parameters(), "lr": cfg.lr_lora, "peak_lr": cfg.lr_lora},
              {"params": model.head_parameters(), "lr": cfg.lr_heads, "peak_lr": cfg.lr_heads}]
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    if resume is not None:
        optimizer.load_state_dict(torch.load(resume / OPTIMIZER_FILE, map_location=device, weights_only=True))
    trainable = model.lora_parameters() + model.head_parameters()

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.yaml").write_text(cfg.to_yaml())
    if start >= cfg.steps:
        print(f"train-sft: {resume} is already at step {start} of {cfg.steps}; nothing to do")
        return resume
    counts = model.parameter_counts()
    print(f"train-sft: {len(samples)} samples from {len(dataset)} episodes; "
          f"{counts['trainable'] / 1e6:.2f} M of {counts['total'] / 1e6:.1f} M parameters trained; "
          + (f"resuming at step {start} from {resume}" if resume else "starting fresh"), flush=True)

    # --- training loop ------------------------------------------------------------------------
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)
    sums, count, t_log = {}, 0, time.perf_counter()
    newest = resume
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-sft", unit="step")
    try:
        for step in bar:
            factor = warmup_cosine(step, cfg.warmup_steps, cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * factor
            rng = np.random.default_rng([cfg.seed, step])
            batch = model.processor(**samples.sample(cfg.batch_size, rng, cfg.augment_shift), device=device)

            out = model(batch)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            optimizer.step()

            done = step + 1
            for key in ("loss", "l1", "nll", "scale"):
                sums[key] = sums.get(key, 0.0) + float(out[key].detach())
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm)
            count += 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                means = {k: v / count for k, v in sums.items()}
                for key, value in means.items():
                    writer.add_scalar(f"train/{key}", value, done)
                writer.add_scalar("train/lr_lora", optimizer.param_groups[0]["lr"], done)
                writer.add_scalar("train/lr_heads", optimizer.param_groups[1]["lr"], done)
                writer.add_scalar("perf/steps_per_s", count / (time.perf_counter() - t_log), done)
                bar.set_postfix(loss=f"{means['loss']:.3f}", l1=f"{means['l1']:.3f}", scale=f"{means['scale']:.3f}")
                sums, count, t_log = {}, 0, time.perf_counter()
            if done % cfg.save_every == 0 or done == cfg.steps:
                newest = save_training_checkpoint(run_dir, done, model.write_files, optimizer, cfg.to_dict(),
                                                  cfg.keep_checkpoints)
                writer.flush()
    finally:
        bar.close()
        writer.close()
    return newest


def run(cfg: TrainSFTConfig) -> int:
    try:
        newest = train(cfg)
    except (FileNotFoundError, ValueError, DatasetError) as err:
        print(f"world-env train-sft: {err}", file=sys.stderr)
        return 2
    print(f"train-sft: done; newest checkpoint {newest} (load the run with make_policy({cfg.output_dir!r}))")
    return 0
