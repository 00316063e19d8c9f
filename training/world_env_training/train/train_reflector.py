"""``world-env train-reflector``: BCE training of the Instant Reflector's projector and head.

Read top to bottom: setup, held-out split, model (fresh or resumed), frame features, optimiser,
training loop, final held-out evaluation.

Data. Every frame o_t of every episode (demos + exploration) is a sample: the reflector reads
the frames ``sample_frame_indices(t, M)`` of o_0..o_t with the instruction and predicts o_t's
success label (0 before the task is achieved, 1 from then on; failures are all 0).

Held-out split. By episode, within each (source, succeeded) group: a ``val_fraction`` share of
each group, at least one episode of any group with two or more, chosen by ``seed``. Written to
``split.json`` and checked on resume.

Balanced sampling. Positives are rare (a successful episode has ``post_success_steps`` + 1
of them among ~100-300 frames; failures none), so each batch takes round(batch_size x
``positive_fraction``) samples uniformly from all labelled-1 frames and the rest uniformly
from all labelled-0 frames, with replacement. With the default 0.5 the classifier is trained
at even odds: R > 0.5 means the frame looks more like the success frames than the others,
which is the decision termination needs; the natural prior would push R below 0.5 on the very
frames where the task has just been achieved. Batches are drawn by a generator seeded with
(seed, step), so a resumed run draws exactly the batches an uninterrupted one would.

Frame features. The encoder is frozen, so every frame is encoded once before training and
samples gather cached features (the same cache ``ReflectorSession`` keeps online). No pixel
augmentation for that reason; the projector and head are small (about 1 M parameters).

Imagined-frame domain (``autoencoder``). A latent world model shows the reflector decoded
frames D(z), smoother than camera frames: on held-out real successes the default reflector fired
on 11 of 11 camera episodes and on 2 of 11 of their reconstructions D(E(o)). With an autoencoder
given, every frame is also reconstructed and encoded, and a ``decoded_fraction`` share of each
batch's samples (drawn per sample) reads the reconstructions of its frames instead of the frames.
The held-out evaluation then also scores the held-out episodes' reconstructions
(``eval.json``'s "decoded").

Checkpoints. Every ``save_every`` steps and at the end, ``OUTPUT/checkpoints/step_N/`` is
written atomically (model files + ``optimizer.pt`` + ``train_state.json``) and then
``checkpoints/latest`` points at it. Starting the same command again resumes from the newest
complete checkpoint. At the end the held-out episodes are scored frame by frame and
``eval.md`` / ``eval.json`` are written next to the checkpoints.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from world_env_training.models.backbones import resolve_device
from world_env_training.checkpoints import (OPTIMIZER_FILE, TRAIN_STATE_FILE, latest_checkpoint, remove_stale,
                                            save_training_checkpoint, warmup_cosine)
from world_env_training.configs import TrainReflectorConfig, model_config_values
from world_env_training.data.dataset import Dataset, DatasetError

SPLIT_FILE = "split.json"
_OWNED = ("vision_encoder", "llm", "llm_layers", "num_frames", "threshold")  # set by TrainReflectorConfig


def reflector_config(cfg: TrainReflectorConfig):
    """The ReflectorConfig of this run: ``cfg.reflector_config``'s fields plus those set in ``cfg``."""
    from world_env_training.models.reflector import ReflectorConfig

    values = model_config_values(cfg, "reflector_config", _OWNED, "ReflectorConfig", "train-reflector")
    return ReflectorConfig.from_dict(values)


def episode_refs(cfg: TrainReflectorConfig) -> list[dict]:
    """One entry per episode of the run's datasets: dataset path, index, key, source, succeeded."""
    refs = []
    for path in (cfg.demos, cfg.exploration):
        if not path:
            continue
        dataset = Dataset(path, check_sha256=False)
        for i in range(len(dataset)):
            entry = dataset.entry(i)
            refs.append({"dataset": str(Path(path)), "index": i, "key": entry["key"], "source": entry["source"],
                         "succeeded": bool(entry["succeeded"])})
    if not refs:
        raise ValueError(f"no episodes in demos={cfg.demos!r} / exploration={cfg.exploration!r}")
    return refs


def split_episodes(refs: list[dict], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) positions in ``refs``, held out per (source, succeeded) group."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[int]] = {}
    for i, ref in enumerate(refs):
        groups.setdefault((ref["source"], ref["succeeded"]), []).append(i)
    held = []
    for key in sorted(groups):
        members = groups[key]
        n = round(len(members) * val_fraction)
        if val_fraction > 0 and len(members) >= 2:
            n = max(n, 1)
        n = min(n, len(members) - 1)  # every group keeps a training episode
        held += rng.permutation(members)[:n].tolist()
    held = sorted(held)
    return [i for i in range(len(refs)) if i not in set(held)], held


class FeatureEpisodes:
    """Episodes with every frame already encoded by the frozen encoder, and their labels."""

    def __init__(self, model, refs: list[dict], desc: str = "encode frames", autoencoder=None):
        self.refs, self.features, self.labels, self.instructions, self.episodes = refs, [], [], [], []
        self.decoded_features, self.decoded_episodes = [], []  # with an autoencoder: of D(E(o))
        datasets = {}
        for ref in tqdm(refs, desc=desc, unit="episode", leave=False):
            dataset = datasets.setdefault(ref["dataset"], Dataset(ref["dataset"]))
            episode = dataset[ref["index"]]
            self.features.append(model.encode_frames(episode.frames).cpu())
            if autoencoder is not None:
                decoded = reconstruct(autoencoder, episode.frames, dataset.path / dataset.entry(ref["index"])["file"])
                self.decoded_features.append(model.encode_frames(decoded).cpu())
                self.decoded_episodes.append({"frames": decoded, "success": episode.success, "key": ref["key"],
                                              "source": ref["source"], "instruction": episode.instruction})
            self.labels.append(episode.success.astype(np.float32))
            self.instructions.append(episode.instruction)
            self.episodes.append({"frames": episode.frames, "success": episode.success, "key": ref["key"],
                                  "source": ref["source"], "instruction": episode.instruction})
        rows = [(e, t) for e, labels in enumerate(self.labels) for t in range(len(labels))]
        self.rows = np.array(rows, dtype=np.int64).reshape(-1, 2)
        flags = np.array([self.labels[e][t] for e, t in rows], dtype=bool)
        self.positives, self.negatives = self.rows[flags], self.rows[~flags]

    def sample(self, batch_size: int, positive_fraction: float, rng: np.random.Generator, frame_indices,
               decoded_fraction: float = 0.0):
        """A balanced batch: (features (B, M, P, C), instructions, labels (B,)); a
        ``decoded_fraction`` share of the samples, drawn per sample, reads reconstructions."""
        if not len(self.positives) or not len(self.negatives):
            raise ValueError("balanced sampling needs frames labelled success and frames labelled 0")
        n_pos = round(batch_size * positive_fraction)
        picks = np.concatenate([self.positives[rng.integers(0, len(self.positives), n_pos)],
                                self.negatives[rng.integers(0, len(self.negatives), batch_size - n_pos)]])
        decoded = rng.random(batch_size) < decoded_fraction if self.decoded_features else np.zeros(batch_size, bool)
        features = torch.stack([(self.decoded_features if d else self.features)[e][frame_indices(int(t))]
                                for (e, t), d in zip(picks, decoded)])
        instructions = [self.instructions[e] for e, _ in picks]
        labels = np.array([self.labels[e][t] for e, t in picks], dtype=np.float32)
        return features, instructions, labels


@torch.no_grad()
def reconstruct(autoencoder, frames: np.ndarray, source) -> np.ndarray:
    """D(E(o)) of (T, H, W, 3) uint8 frames, as uint8; ``source`` names them in errors."""
    from world_env_training.models.world_model.processor_world_model import frames_to_tensor, tensor_to_frames

    size = autoencoder.config.resolution
    if frames.shape[1:3] != (size, size):
        raise ValueError(f"{source}: frames are {frames.shape[2]}x{frames.shape[1]}, the autoencoder's resolution "
                         f"is {size}")
    device = next(autoencoder.parameters()).device
    out = [tensor_to_frames(autoencoder.decode(autoencoder.encode(frames_to_tensor(frames[i:i + 64], device))))
           for i in range(0, len(frames), 64)]
    return np.concatenate(out)


@torch.no_grad()
def held_out_scores(model, data: FeatureEpisodes) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """R at every frame of every held-out episode (natural class balance), and the labels."""
    rewards = [model.score_episode(None, instruction, features=features.to(model.device))
               for features, instruction in zip(data.features, data.instructions)]
    return rewards, data.labels


def train(cfg: TrainReflectorConfig) -> tuple[Path, dict | None]:
    """Run (or resume) reflector training; returns (newest checkpoint, held-out report or None)."""
    from torch.utils.tensorboard import SummaryWriter

    from world_env_training.models.reflector import Reflector
    from world_env_training.eval.reflector_eval import auroc, evaluate_reflector, format_markdown, write_report

    # --- setup ------------------------------------------------------------------------------
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.output_dir)
    remove_stale(run_dir)
    model_config = reflector_config(cfg)
    refs = episode_refs(cfg)
    train_ids, held_ids = split_episodes(refs, cfg.val_fraction, cfg.seed)
    split = {"train": [refs[i]["key"] for i in train_ids], "held_out": [refs[i]["key"] for i in held_ids]}
    split_path = run_dir / SPLIT_FILE
    if split_path.is_file() and json.loads(split_path.read_text()) != split:
        raise ValueError(f"{split_path}: the datasets or seed changed since this run started; use a new output_dir")

    # --- model: resume from the newest checkpoint, or build fresh ----------------------------
    torch.manual_seed(cfg.seed)
    resume = latest_checkpoint(run_dir)
    if resume is not None:
        model = Reflector.from_pretrained(resume, device=device)
        changed = {k: (v, model_config.to_dict()[k]) for k, v in model.config.to_dict().items()
                   if model_config.to_dict()[k] != v}
        if changed:
            raise ValueError(f"{run_dir}: its checkpoints were trained with another reflector configuration "
                             f"(field: (checkpoint, now) {changed}); use a new output_dir")
        start = json.loads((resume / TRAIN_STATE_FILE).read_text())["step"]
    else:
        model = Reflector(model_config).to(device)
        start = 0
    model.train()

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.yaml").write_text(cfg.to_yaml())
    split_path.write_text(json.dumps(split, indent=1))
    if start >= cfg.steps:
        print(f"train-reflector: {resume} is already at step {start} of {cfg.steps}; nothing to do")
        return resume, None

    # --- data: every frame encoded once ------------------------------------------------------
    t0 = time.perf_counter()
    autoencoder = None
    if cfg.autoencoder:
        from world_env_training.models.world_model.autoencoder import FrameAutoencoder

        autoencoder = FrameAutoencoder.from_pretrained(cfg.autoencoder, device=device).eval()
    data = FeatureEpisodes(model, [refs[i] for i in train_ids], "encode train frames", autoencoder)
    held = (FeatureEpisodes(model, [refs[i] for i in held_ids], "encode held-out frames", autoencoder)
            if held_ids else None)
    if not len(data.positives) or not len(data.negatives):
        raise ValueError(f"training frames: {len(data.positives)} labelled success, {len(data.negatives)} labelled 0; "
                         "the reflector needs both")
    counts = model.parameter_counts()
    print(f"train-reflector: {len(data.rows)} train frames ({len(data.positives)} success) in {len(train_ids)} "
          f"episodes, {len(held_ids)} held out; encoded in {time.perf_counter() - t0:.0f} s; "
          f"{counts['trainable'] / 1e6:.2f} M of {counts['total'] / 1e6:.1f} M parameters trained; "
          + (f"resuming at step {start} from {resume}" if resume else "starting fresh"), flush=True)

    # --- optimiser ----------------------------------------------------------------------------
    trainable = model.trainable_parameters()
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if resume is not None:
        optimizer.load_state_dict(torch.load(resume / OPTIMIZER_FILE, map_location=device, weights_only=True))

    # --- training loop ------------------------------------------------------------------------
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)
    sums, count, t_log = {}, 0, time.perf_counter()
    newest = resume
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-reflector", unit="step")
    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * warmup_cosine(step, cfg.warmup_steps, cfg.steps)
            rng = np.random.default_rng([cfg.seed, step])
            features, instructions, labels = data.sample(cfg.batch_size, cfg.positive_fraction, rng,
                                                         model.processor.frame_indices, cfg.decoded_fraction)
            batch = model.processor(features, instructions, labels, device=device)

            out = model(batch)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            optimizer.step()

            done = step + 1
            reward, target = out["reward"], batch["success"]
            stats = {"loss": float(out["loss"].detach()), "grad_norm": float(grad_norm),
                     "accuracy": float(((reward > model.threshold).float() == target).float().mean()),
                     "reward_positive": float(reward[target > 0.5].mean()) if (target > 0.5).any() else math.nan,
                     "reward_negative": float(reward[target < 0.5].mean()) if (target < 0.5).any() else math.nan}
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                means = {k: v / count for k, v in sums.items()}
                for key, value in means.items():
                    writer.add_scalar(f"train/{key}", value, done)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], done)
                writer.add_scalar("perf/steps_per_s", count / (time.perf_counter() - t_log), done)
                bar.set_postfix(loss=f"{means['loss']:.3f}", acc=f"{means['accuracy']:.2f}")
                sums, count, t_log = {}, 0, time.perf_counter()
            if held is not None and cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
                rewards, labels = held_out_scores(model, held)
                r, y = np.concatenate(rewards), np.concatenate(labels)
                bce = float(-np.mean(y * np.log(np.clip(r, 1e-7, 1)) + (1 - y) * np.log(np.clip(1 - r, 1e-7, 1))))
                writer.add_scalar("held_out/bce", bce, done)
                writer.add_scalar("held_out/auroc", auroc(r, y) or math.nan, done)
                model.train()
            if done % cfg.save_every == 0 or done == cfg.steps:
                newest = save_training_checkpoint(run_dir, done, model.write_files, optimizer, cfg.to_dict(),
                                                  cfg.keep_checkpoints)
                writer.flush()
    finally:
        bar.close()
        writer.close()

    # --- held-out evaluation ------------------------------------------------------------------
    report = None
    if held is not None:
        model.eval()
        report = evaluate_reflector(model, held.episodes, features=[f.to(device) for f in held.features])
        report["checkpoint"] = str(newest)
        markdown = format_markdown(report)
        if autoencoder is not None:
            report["decoded"] = evaluate_reflector(model, held.decoded_episodes,
                                                   features=[f.to(device) for f in held.decoded_features])
            markdown += "\n" + format_markdown(report["decoded"], "The same episodes reconstructed by the autoencoder")
        write_report(report, run_dir, markdown=markdown)
        print(markdown)
    return newest, report


def run(cfg: TrainReflectorConfig) -> int:
    try:
        newest, _ = train(cfg)
    except (FileNotFoundError, ValueError, DatasetError) as err:
        print(f"world-env train-reflector: {err}", file=sys.stderr)
        return 2
    print(f"train-reflector: done; newest checkpoint {newest} (load with Reflector.from_pretrained("
          f"{cfg.output_dir!r}))")
    return 0
