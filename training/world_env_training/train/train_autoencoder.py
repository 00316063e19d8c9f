"""``world-env train-autoencoder``: train the latent world model's frame autoencoder.

Data: every frame of every training episode (demonstrations and exploration rollouts), with
the held-out split of ``train-world-model`` (``split_episodes``: the episodes of the largest
init state ids per task are left out), so that the world model's held-out evaluation sees
scenes neither network trained on. Batches are drawn uniformly with replacement by a generator
seeded with (seed, step), so a resumed run draws what an uninterrupted one would.

Loss: L1 + MSE of the reconstruction (``FrameAutoencoder.forward``). AdamW, linear warm-up,
cosine decay to a tenth of the peak.

Checkpoints as in ``train-world-model``: ``OUTPUT/checkpoints/step_N/`` (autoencoder folder,
``optimizer.pt``, ``train_state.json``) written atomically, then ``latest`` moved; the same
command resumes from the newest one. At the end the held-out frames' reconstruction PSNR (and
the training frames', on a sample of the same size) goes to ``OUTPUT/eval.json`` and the log.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from world_env_training.checkpoints import (OPTIMIZER_FILE, TRAIN_STATE_FILE, latest_checkpoint, remove_stale,
                                            save_training_checkpoint, warmup_cosine)
from world_env_training.configs import TrainAutoencoderConfig
from world_env_training.data.dataset import Dataset, DatasetError
from world_env_training.data.world_model_data import split_episodes
from world_env_training.models.backbones import resolve_device

EVAL_FILE = "eval.json"


def load_frames(datasets: list[Dataset], ids: list[tuple[int, int]], resolution: int) -> np.ndarray:
    """(N, H, W, 3) uint8: every frame of the episodes ``ids`` ((dataset, index) pairs)."""
    out = []
    for d, i in ids:
        frames = datasets[d].load_arrays(i, ["frames"])["frames"]
        if frames.shape[1:3] != (resolution, resolution):
            raise ValueError(f"{datasets[d].path / datasets[d].entry(i)['file']}: frames are "
                             f"{frames.shape[2]}x{frames.shape[1]}, resolution is {resolution}")
        out.append(frames)
    if not out:
        return np.zeros((0, resolution, resolution, 3), np.uint8)
    return np.concatenate(out)


@torch.no_grad()
def reconstruction_psnr(model, frames: np.ndarray, device, batch_size: int = 64) -> dict:
    """Mean and 5th percentile of per-frame PSNR (dB) of ``frames`` through the autoencoder, on
    the stored uint8 frames (``world_model_eval.psnr``, as the world model's quality is scored)."""
    from world_env_training.eval.world_model_eval import psnr
    from world_env_training.models.world_model.processor_world_model import frames_to_tensor, tensor_to_frames

    model.eval()
    values = []
    for i in range(0, len(frames), batch_size):
        chunk = frames[i:i + batch_size]
        values.append(psnr(tensor_to_frames(model.decode(model.encode(frames_to_tensor(chunk, device)))), chunk))
    values = np.concatenate(values) if values else np.zeros(0)
    return {"frames": int(len(values)), "psnr_mean": float(values.mean()) if len(values) else None,
            "psnr_p5": float(np.percentile(values, 5)) if len(values) else None}


def train(cfg: TrainAutoencoderConfig) -> Path:
    """Run (or resume) training; returns the newest checkpoint folder."""
    from torch.utils.tensorboard import SummaryWriter

    from world_env_training.models.world_model.autoencoder import FrameAutoencoder
    from world_env_training.models.world_model.processor_world_model import frames_to_tensor

    device = resolve_device(cfg.device)
    run_dir = Path(cfg.output_dir)
    remove_stale(run_dir)
    datasets = [Dataset(cfg.demos)] + ([Dataset(cfg.exploration)] if cfg.exploration else [])
    train_ids, held_ids = split_episodes(datasets, cfg.holdout_per_task)
    frames = load_frames(datasets, train_ids, cfg.resolution)
    if len(frames) == 0:
        raise ValueError("no training frames (every episode is held out)")

    torch.manual_seed(cfg.seed)
    ae_config = cfg.autoencoder_config()
    resume = latest_checkpoint(run_dir)
    if resume is not None:
        model = FrameAutoencoder.from_pretrained(resume, device=device)
        if model.config != ae_config:
            raise ValueError(f"{run_dir}: its checkpoints hold another autoencoder configuration; use a new output_dir")
        start = json.loads((resume / TRAIN_STATE_FILE).read_text())["step"]
    else:
        model, start = FrameAutoencoder(ae_config).to(device), 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    if resume is not None:
        optimizer.load_state_dict(torch.load(resume / OPTIMIZER_FILE, map_location=device, weights_only=True))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.yaml").write_text(cfg.to_yaml())
    newest = resume
    if start < cfg.steps:
        print(f"train-autoencoder: {len(frames)} frames from {len(train_ids)} episodes ({len(held_ids)} held out); "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; latents "
              f"{ae_config.latent_channels}x{ae_config.latent_size}x{ae_config.latent_size}; "
              + (f"resuming at step {start} from {resume}" if resume else "starting fresh"), flush=True)
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)
        loss_sum, count, t_log = 0.0, 0, time.perf_counter()
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-autoencoder", unit="step")
        model.train()
        try:
            for step in bar:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * warmup_cosine(step, cfg.warmup_steps, cfg.steps)
                rng = np.random.default_rng([cfg.seed, step])
                x = frames_to_tensor(frames[rng.integers(0, len(frames), cfg.batch_size)], device)
                loss = model(x)["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done = step + 1
                loss_sum, count = loss_sum + float(loss.detach()), count + 1
                if done % cfg.log_every == 0 or done == cfg.steps:
                    writer.add_scalar("train/loss", loss_sum / count, done)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], done)
                    writer.add_scalar("perf/steps_per_s", count / (time.perf_counter() - t_log), done)
                    bar.set_postfix(loss=f"{loss_sum / count:.4f}")
                    loss_sum, count, t_log = 0.0, 0, time.perf_counter()
                if done % cfg.save_every == 0 or done == cfg.steps:
                    newest = save_training_checkpoint(run_dir, done, model.write_files, optimizer, cfg.to_dict(),
                                                      cfg.keep_checkpoints)
                    writer.flush()
        finally:
            bar.close()
            writer.close()
    else:
        print(f"train-autoencoder: {resume} is already at step {start} of {cfg.steps}; nothing to do")

    held = load_frames(datasets, held_ids, cfg.resolution)
    sample = frames[np.random.default_rng(cfg.seed).permutation(len(frames))[:max(len(held), 256)]]
    report = {"step": max(start, cfg.steps), "checkpoint": str(newest),
              "held_out": reconstruction_psnr(model, held, device),
              "train_sample": reconstruction_psnr(model, sample, device),
              "held_out_episodes": [datasets[d].entry(i)["key"] for d, i in held_ids]}
    (run_dir / EVAL_FILE).write_text(json.dumps(report, indent=1))
    h, t = report["held_out"], report["train_sample"]
    print(f"train-autoencoder: reconstruction PSNR held-out {h['psnr_mean'] or float('nan'):.2f} dB "
          f"(5th percentile {h['psnr_p5'] or float('nan'):.2f}, {h['frames']} frames), training sample "
          f"{t['psnr_mean']:.2f} dB; {run_dir / EVAL_FILE}", flush=True)
    return newest


def run(cfg: TrainAutoencoderConfig) -> int:
    try:
        newest = train(cfg)
    except (FileNotFoundError, ValueError, DatasetError) as err:
        print(f"world-env train-autoencoder: {err}", file=sys.stderr)
        return 2
    print(f"train-autoencoder: done; newest checkpoint {newest} "
          f"(train-world-model --autoencoder {cfg.output_dir})")
    return 0
