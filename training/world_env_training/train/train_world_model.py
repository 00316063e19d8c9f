"""``world-env train-world-model``: train the diffusion world simulator on demos + exploration.

Read top to bottom: setup, data and the held-out split, model (fresh or resumed), optimiser,
training loop.

Data. Every step t of every training episode is one sample: the memory-bank frames
(``select_memory(t, K, recent, stride)``, slot 0 = o_t), the action map of the commanded next
state ``PandaModel.commanded_state(s_t, a_t)`` drawn with the episode's camera, s_t and the
commanded state (normalised), the geometry map of the episode's camera (with the point map
where the episode has depth), and o_{t+1} as target. Demonstrations and exploration rollouts
(successes and failures) are pooled; ``exploration=""`` trains on demonstrations only (the
paper's ablation). Batches are drawn uniformly with replacement by a generator seeded with
(seed, step), and the diffusion noise by a torch generator seeded the same way, so a resumed
run draws exactly what an uninterrupted one would.

Held-out split (``split_episodes``). Per (suite, task) the ``holdout_per_task`` largest
init_state_ids among the task's demonstrations are held out, and every episode, demonstration
or exploration, that starts from one of them is left out of training: evaluation then sees
initial scenes the model never saw. The split is written to ``OUTPUT/holdout.json`` and
``world_model_eval`` reads it.

Rollout history (``rollout_history_steps``, latent models): the history of a batch can come
from the model's own no-gradient rollout of k steps from real latents, so that the loss teaches it
to correct its own drift (``rollout_history_batch``).

Loss: v-prediction MSE (``WorldModel.forward``). AdamW, linear warm-up, cosine decay to a
tenth of the peak; optional EMA of the weights (``ema_decay``).

Checkpoints. Every ``save_every`` steps and at the end, ``OUTPUT/checkpoints/step_N/`` is
written atomically: a complete model folder (EMA weights when EMA is on) plus
``train_weights.safetensors`` (raw weights, EMA only), ``optimizer.pt`` and
``train_state.json``; then ``checkpoints/latest`` is moved to it. A run killed at any moment
keeps every completed checkpoint; the same command resumes from the newest one.
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
from world_env_training.configs import TrainWorldModelConfig, model_config_values
from world_env_common.robot import PandaModel
from world_env_training.data.dataset import Dataset, DatasetError
from world_env_training.data.world_model_data import EpisodeArrays, load_model_episode, split_episodes
from world_env_training.models.world_model.processor_world_model import fit_arm_gains

TRAIN_WEIGHTS_FILE = "train_weights.safetensors"
HOLDOUT_FILE = "holdout.json"
_OWNED = ("resolution", "memory_frames", "action_map", "arm_map", "frame_stride", "geometry_tokens", "semantic_tokens",
          "sampler_steps")


def model_config(cfg: TrainWorldModelConfig):
    """The WorldModelConfig of this run: ``cfg.model_config``'s fields plus those ``cfg`` owns."""
    from world_env_training.models.world_model import WorldModelConfig

    values = model_config_values(cfg, "model_config", _OWNED, "WorldModelConfig", "train-world-model")
    recent = values.get("memory_recent", WorldModelConfig.memory_recent)
    values["memory_recent"] = min(recent, values["memory_frames"])
    if not values["sampler_steps"]:
        del values["sampler_steps"]  # the configuration's own (the pixel default or latent_cpu's)
    if cfg.autoencoder:
        return WorldModelConfig.latent_cpu(**values)
    return WorldModelConfig.from_dict(values)


# --- data ---------------------------------------------------------------------------------------

class TransitionSamples:
    """All (episode, t) transitions of some episodes, in memory, as raw processor inputs
    (with ``latents``, per-episode (T+1, C, h, w) autoencoder latents: also the history slots'
    latents and the target's, under the batch keys ``LATENTS`` and ``TARGET_LATENT``)."""

    def __init__(self, episodes: list[EpisodeArrays], memory: tuple[int, int, int],
                 latents: list[np.ndarray] | None = None):
        self.episodes, self.memory, self.latents = episodes, memory, latents
        self.rows = np.array([(e, t) for e, ep in enumerate(episodes) for t in range(len(ep.actions))])
        if len(self.rows) == 0:
            raise ValueError("no episode with at least one action to train on")

    def __len__(self) -> int:
        return len(self.rows)

    def gather(self, picks) -> dict:
        """Raw inputs (``WorldModelProcessor.__call__`` keywords) of the (episode, t) pairs."""
        from world_env_training.models.world_model.memory_bank import select_memory

        from world_env_training.models.world_model.processor_world_model import LATENTS, TARGET_LATENT

        out = {k: [] for k in ("history", "action_map", "state", "commanded", "geometry", "target")}
        if self.latents is not None:
            out.update({LATENTS: [], TARGET_LATENT: []})
        for e, t in picks:
            ep = self.episodes[e]
            slots = select_memory(int(t), *self.memory)
            if self.latents is not None:
                out[LATENTS].append(self.latents[e][slots])
                out[TARGET_LATENT].append(self.latents[e][t + 1])
            out["history"].append(ep.frames[slots])
            out["action_map"].append(ep.action_maps[t])
            out["state"].append(ep.states[t])
            out["commanded"].append(ep.commanded[t])
            out["geometry"].append(ep.geometry if ep.geometry.ndim == 3 else ep.geometry[t])
            out["target"].append(ep.frames[t + 1])
        return {k: np.stack(v) for k, v in out.items()}

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict:
        return self.gather(self.rows[rng.integers(0, len(self.rows), batch_size)])

    def pick(self, batch_size: int, rng: np.random.Generator, min_t: int) -> np.ndarray:
        """(batch_size, 2) (episode, t) rows with t >= min_t, drawn uniformly with replacement."""
        eligible = np.flatnonzero(self.rows[:, 1] >= min_t)
        if len(eligible) == 0:
            raise ValueError(f"no transition at step {min_t} or later to start a rollout history from")
        return self.rows[eligible[rng.integers(0, len(eligible), batch_size)]]


@torch.no_grad()
def rollout_history_batch(model, samples: TransitionSamples, picks: np.ndarray, k: int, device,
                          sampler_steps: int = 0, generator: torch.Generator | None = None) -> dict:
    """The training batch of ``picks`` (rows (episode, t), t >= k) whose history comes from the
    model's own k-step open-loop rollout from t - k (``TrainWorldModelConfig.rollout_history_steps``):
    latent slots newer than t - k are the predicted latents, the current frame (what the semantic
    tokens read) is the rollout's frame, and the target stays the real o_{t+1}. ``generator``: the
    rollout's sampling noise (seeded per step in training, so that a resumed run draws the same)."""
    from world_env_training.models.world_model.memory_bank import select_memory
    from world_env_training.models.world_model.modeling_world_model import predict_next
    from world_env_training.models.world_model.processor_world_model import HISTORY, LATENTS

    episodes, start = picks[:, 0], picks[:, 1] - k
    latents, frame = [], None  # latents[j]: predicted z at start + j + 1; frame: the newest predicted frame

    def batch_at(times: np.ndarray) -> dict:
        raw, real = split_latent_keys(samples.gather(np.stack([episodes, times], 1)), device)
        batch = {**model.processor(**raw, device=device), **real}
        if latents:
            history = batch[LATENTS].clone()
            for b, slots in enumerate(select_memory(int(u), *samples.memory) for u in times):
                for slot, index in enumerate(slots):
                    if index > start[b]:
                        history[b, slot] = latents[index - start[b] - 1][b]
            frames = batch[HISTORY].clone()
            frames[:, 0] = frame
            batch.update({LATENTS: history, HISTORY: frames})
        return batch

    for j in range(k):
        out = predict_next(model, batch_at(start + j), steps=sampler_steps or None, generator=generator)
        latents.append(out["latent"])
        frame = out["frame"]
    return batch_at(picks[:, 1])


@torch.no_grad()
def encode_episodes(autoencoder, episodes: list[EpisodeArrays], device, batch_size: int = 128) -> list[np.ndarray]:
    """Per episode, (T+1, C, h, w) float32 latents of every frame (the encoder is frozen, so
    training reads them from memory instead of encoding K + 1 frames per sample)."""
    from world_env_training.models.world_model.processor_world_model import frames_to_tensor

    out = []
    for ep in episodes:
        parts = [autoencoder.encode(frames_to_tensor(ep.frames[i:i + batch_size], device)).float().cpu().numpy()
                 for i in range(0, len(ep.frames), batch_size)]
        out.append(np.concatenate(parts))
    return out


def split_latent_keys(raw: dict, device) -> tuple[dict, dict]:
    """(processor inputs, latent tensors) of a gathered batch."""
    from world_env_training.models.world_model.processor_world_model import LATENTS, TARGET_LATENT

    latents = {k: torch.as_tensor(raw.pop(k), device=device) for k in (LATENTS, TARGET_LATENT) if k in raw}
    return raw, latents


def load_datasets(cfg: TrainWorldModelConfig) -> list[Dataset]:
    return [Dataset(cfg.demos)] + [Dataset(path) for path in cfg.exploration.split(",") if path]


# --- optimisation helpers -------------------------------------------------------------------------

class EMA:
    """Exponential moving average of a model's trainable weights (diffusers' warm-up rule)."""

    def __init__(self, model, decay: float, weights: dict | None = None):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = {n: (weights[n] if weights else params[n].detach()).clone().float() for n in self.names}

    @torch.no_grad()
    def update(self, model, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        params = dict(model.named_parameters())
        for n in self.names:
            self.shadow[n].lerp_(params[n].detach().float(), 1 - d)

    def state_dict_for(self, model) -> dict:
        """The model's trainable state dict with the averaged parameters swapped in."""
        return {k: self.shadow.get(k, v) for k, v in model.trainable_state_dict().items()}


def save_checkpoint(run_dir: Path, model, optimizer, ema: EMA | None, step: int, cfg: TrainWorldModelConfig) -> Path:
    from safetensors.torch import save_file

    def write_model(folder: Path) -> None:
        if ema is None:
            model.write_files(folder)
            return
        # The EMA weights are the model; the raw ones are kept to resume training from.
        model.write_files(folder, ema.state_dict_for(model))
        save_file({k: v.cpu().contiguous() for k, v in model.trainable_state_dict().items()},
                  str(folder / TRAIN_WEIGHTS_FILE))

    return save_training_checkpoint(run_dir, step, write_model, optimizer, cfg.to_dict(), cfg.keep_checkpoints)


# --- training -----------------------------------------------------------------------------------

def train(cfg: TrainWorldModelConfig) -> Path:
    """Run (or resume) training; returns the newest checkpoint folder."""
    from safetensors.torch import load_file
    from torch.utils.tensorboard import SummaryWriter

    from world_env_training.models.world_model import WorldModel, WorldModelProcessor

    # --- setup ------------------------------------------------------------------------------
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.output_dir)
    remove_stale(run_dir)
    wm_config = model_config(cfg)
    memory = (wm_config.memory_frames, wm_config.memory_recent, wm_config.memory_stride)

    # --- data and the held-out split ----------------------------------------------------------
    datasets = load_datasets(cfg)
    train_ids, held_ids = split_episodes(datasets, cfg.holdout_per_task)
    robot = PandaModel()  # state space: commanded_state does not depend on the base placement
    # Fitted on the demonstrations: exploration rollouts push against the table and objects, and
    # their lower ratio (0.12 against 0.24) left the imagined arm 3.6 cm behind the real one after
    # one chunk (results/loop_arm8, "Where imagination leaves reality"; 0.2 cm with 0.24).
    free = [(d, i) for d, i in train_ids if d == 0] or train_ids
    gains = fit_arm_gains(robot, [tuple(datasets[d].load_arrays(i, ["states", "actions"]).values()) for d, i in free])
    episodes = [load_model_episode(datasets[d], i, robot, wm_config, gains)
                for d, i in tqdm(train_ids, "load episodes", leave=False)]

    # --- model: resume from the newest checkpoint, or build fresh ----------------------------
    torch.manual_seed(cfg.seed)
    resume = latest_checkpoint(run_dir)
    ema = None
    latents = None
    if resume is not None:
        model = WorldModel.from_pretrained(resume, device=device)
        if model.config != wm_config:
            raise ValueError(f"{run_dir}: its checkpoints hold another model configuration; use a new output_dir")
        if cfg.ema_decay > 0:
            averaged = {k: v.to(device) for k, v in model.trainable_state_dict().items()}
            raw = load_file(str(resume / TRAIN_WEIGHTS_FILE), device=str(device))
            model.load_state_dict(raw, strict=False)
            ema = EMA(model, cfg.ema_decay, averaged)
        start = json.loads((resume / TRAIN_STATE_FILE).read_text())["step"]
    else:
        states = np.concatenate([ep.states for ep in episodes])
        processor = WorldModelProcessor.fit(states, [ep.frames for ep in episodes])
        processor.position_gain, processor.rotation_gain = gains
        autoencoder = None
        if cfg.autoencoder:
            from world_env_training.models.world_model.autoencoder import FrameAutoencoder

            autoencoder = FrameAutoencoder.from_pretrained(cfg.autoencoder, device=device)
            latents = encode_episodes(autoencoder, episodes, device)
            processor.fit_latents(latents)
        model = WorldModel(wm_config, processor, autoencoder).to(device)
        ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        start = 0
    if model.autoencoder is not None and latents is None:
        latents = encode_episodes(model.autoencoder, episodes, device)
    samples = TransitionSamples(episodes, memory, latents)
    model.train()

    # --- optimiser ----------------------------------------------------------------------------
    trainable = model.trainable_parameters()
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if resume is not None:
        optimizer.load_state_dict(torch.load(resume / OPTIMIZER_FILE, map_location=device, weights_only=True))

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.yaml").write_text(cfg.to_yaml())
    holdout = {"holdout_per_task": cfg.holdout_per_task,
               "datasets": [str(d.path) for d in datasets],
               "held_out": [{"dataset": d, "index": i, "key": datasets[d].entry(i)["key"]} for d, i in held_ids],
               "train": [{"dataset": d, "index": i, "key": datasets[d].entry(i)["key"]} for d, i in train_ids]}
    (run_dir / HOLDOUT_FILE).write_text(json.dumps(holdout, indent=1))
    if start >= cfg.steps:
        print(f"train-world-model: {resume} is already at step {start} of {cfg.steps}; nothing to do")
        return resume
    counts = model.parameter_counts()
    print(f"train-world-model: {len(samples)} transitions from {len(episodes)} episodes "
          f"({len(held_ids)} held out); {counts['trainable'] / 1e6:.2f} M of {counts['total'] / 1e6:.1f} M "
          f"parameters trained; residual_std {model.processor.residual_std:.4f}; "
          + (f"latent ({model.autoencoder.config.latent_channels}x{model.autoencoder.config.latent_size}^2, "
             f"latent change std {model.processor.latent_residual_std:.4f}); " if model.autoencoder else "")
          + (f"history from its own rollouts of 0..{cfg.rollout_history_steps} steps; "
             if cfg.rollout_history_steps else "")
          + (f"resuming at step {start} from {resume}" if resume else "starting fresh"),
          flush=True)

    # --- training loop ------------------------------------------------------------------------
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)
    loss_sum, grad_sum, count, t_log = 0.0, 0.0, 0, time.perf_counter()
    newest = resume
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-world-model", unit="step")
    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * warmup_cosine(step, cfg.warmup_steps, cfg.steps)
            rng = np.random.default_rng([cfg.seed, step])
            generator = torch.Generator(device).manual_seed(int(rng.integers(2 ** 62)))
            if cfg.rollout_history_steps:
                k = int(rng.integers(0, cfg.rollout_history_steps + 1))
                rollout_noise = torch.Generator(device).manual_seed(int(rng.integers(2 ** 62)))
                batch = rollout_history_batch(model, samples, samples.pick(cfg.batch_size, rng, k), k, device,
                                              cfg.sampler_steps, rollout_noise)
            else:
                raw, latents = split_latent_keys(samples.sample(cfg.batch_size, rng), device)
                batch = {**model.processor(**raw, device=device), **latents}

            loss = model(batch, generator)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            optimizer.step()
            if ema is not None:
                ema.update(model, step)

            done = step + 1
            loss_sum, grad_sum, count = loss_sum + float(loss.detach()), grad_sum + float(grad_norm), count + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                writer.add_scalar("train/loss", loss_sum / count, done)
                writer.add_scalar("train/grad_norm", grad_sum / count, done)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], done)
                writer.add_scalar("perf/steps_per_s", count / (time.perf_counter() - t_log), done)
                bar.set_postfix(loss=f"{loss_sum / count:.4f}")
                loss_sum, grad_sum, count, t_log = 0.0, 0.0, 0, time.perf_counter()
            if done % cfg.save_every == 0 or done == cfg.steps:
                newest = save_checkpoint(run_dir, model, optimizer, ema, done, cfg)
                writer.flush()
    finally:
        bar.close()
        writer.close()
    return newest


def run(cfg: TrainWorldModelConfig) -> int:
    try:
        newest = train(cfg)
    except (FileNotFoundError, ValueError, DatasetError) as err:
        print(f"world-env train-world-model: {err}", file=sys.stderr)
        return 2
    print(f"train-world-model: done; newest checkpoint {newest} "
          f"(load it with WorldModel.from_pretrained({cfg.output_dir!r}))")
    return 0
