"""World-model quality report on held-out real trajectories.

For each checkpoint given (label=path; several compare ablations: without exploration data,
without geometry or semantic tokens, ...), on the same held-out episodes (by default those in
the first checkpoint's run ``holdout.json``, see ``train_world_model.split_episodes``, plus
those of ``more_episodes`` that start from init states no training episode starts from):

- one-step: for every step t (every ``one_step_stride``-th), predict o_{t+1} from the real
  memory-bank frames, states and action; PSNR and SSIM against the real o_{t+1}.
- open-loop: from ``starts_per_episode`` start steps s per episode (spread over the episode),
  roll the model out autoregressively for ``horizon`` steps, its own frames fed back into the
  memory bank (the frames up to s are real); states and actions are the recorded ones, so
  only the frames drift. PSNR and SSIM at each horizon h = 1..horizon against o_{s+h}.
- the copy-last-frame baseline on exactly the same targets: o_t for one-step, o_s for every
  horizon of the open-loop rollout from s. A model that does not beat it has learnt nothing
  about motion.

Metrics on uint8 RGB frames: PSNR = 10 log10(255^2 / MSE) per frame (capped at 100 dB for
identical frames), SSIM with an 11x11 Gaussian window (sigma 1.5), constants (0.01 * 255)^2 and
(0.03 * 255)^2, over the valid (unpadded) region, averaged over the three channels. Means are
over frames (one-step) or rollouts (per horizon).

Motion-masked PSNR: the PSNR over only the pixels that really moved, those whose real change
from the last real frame (o_t one-step, the start frame o_s open-loop) exceeds
``MOTION_THRESHOLD`` grey levels in some channel; about 90 % of LIBERO's pixels do not move in
a step, and full-frame PSNR mostly scores them. Copy-last-frame is scored on the same pixels.
Frames in which no pixel moved have no value and are left out of its means (the report gives how
many frames had motion).

Outputs in ``output_dir``: ``report.md`` (tables), ``metrics.json``, ``psnr_vs_horizon.png``,
``ssim_vs_horizon.png`` and ``strip_<label>.png`` (rows: real, open-loop prediction; columns:
horizons 0 (the real start frame), 1, 2, 4, ...).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from world_env_training.configs import WorldModelEvalConfig
from world_env_training.eval.stats import mean_interval

PSNR_CAP_DB = 100.0
MOTION_THRESHOLD = 8  # grey levels (of 255) of real change for a pixel to count as moving


# --- metrics ------------------------------------------------------------------------------------

def psnr(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of (..., H, W, 3) uint8 frames (capped at PSNR_CAP_DB)."""
    err = (np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2
    mse = err.reshape(err.shape[:-3] + (-1,)).mean(-1)
    with np.errstate(divide="ignore"):
        value = 10.0 * np.log10(255.0 ** 2 / mse)
    return np.minimum(value, PSNR_CAP_DB)


def motion_psnr(pred: np.ndarray, target: np.ndarray, last: np.ndarray,
                threshold: int = MOTION_THRESHOLD) -> np.ndarray:
    """Per-frame PSNR of (..., H, W, 3) uint8 frames over the pixels where ``target`` differs
    from ``last`` (the last real frame) by more than ``threshold`` in some channel (module
    docstring); NaN for a frame where none does."""
    target = np.asarray(target, np.float64)
    moving = (np.abs(target - np.asarray(last, np.float64)).max(-1) > threshold)[..., None]
    err = (np.asarray(pred, np.float64) - target) ** 2 * moving
    flat = err.shape[:-3] + (-1,)
    count = np.broadcast_to(moving, err.shape).reshape(flat).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = err.reshape(flat).sum(-1) / count
        value = np.where(count > 0, 10.0 * np.log10(255.0 ** 2 / mse), np.nan)
    return np.minimum(value, PSNR_CAP_DB)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of (..., H, W, 3) uint8 frames (module docstring)."""
    pred, target = np.asarray(pred), np.asarray(target)
    lead = pred.shape[:-3]
    x = torch.as_tensor(pred.reshape((-1,) + pred.shape[-3:]), dtype=torch.float64).permute(0, 3, 1, 2)
    y = torch.as_tensor(target.reshape((-1,) + target.shape[-3:]), dtype=torch.float64).permute(0, 3, 1, 2)
    n, c = x.shape[:2]
    x, y = x.reshape(n * c, 1, *x.shape[2:]), y.reshape(n * c, 1, *y.shape[2:])
    w = _gaussian_window()
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx ** 2
    syy = F.conv2d(y * y, w) - my ** 2
    sxy = F.conv2d(x * y, w) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return s.mean((1, 2, 3)).reshape(n, c).mean(1).reshape(lead).numpy()


def copy_last_one_step(frames: np.ndarray) -> np.ndarray:
    """Copy-last-frame predictions of o_1..o_T from (T+1, H, W, 3) frames: o_0..o_{T-1}."""
    return frames[:-1]


def copy_last_open_loop(frames: np.ndarray, start: int, horizon: int) -> np.ndarray:
    """Copy-last-frame predictions of o_{start+1}..o_{start+horizon}: o_start repeated."""
    return np.repeat(frames[start][None], horizon, 0)


# --- evaluation ---------------------------------------------------------------------------------

def _batch_inputs(model, histories, ep_list, ts, device, action_ts=None):
    """Processed batch for predicting o_{t+1} of each (episode, t) with the given histories
    (``action_ts``: take the commanded state and action map of these steps instead of t's)."""
    geometry = np.stack([ep.geometry if ep.geometry.ndim == 3 else ep.geometry[t] for ep, t in zip(ep_list, ts)])
    action_ts = ts if action_ts is None else action_ts
    return model.processor(history=np.stack(histories),
                           action_map=np.stack([ep.action_maps[t] for ep, t in zip(ep_list, action_ts)]),
                           state=np.stack([ep.states[t] for ep, t in zip(ep_list, ts)]),
                           commanded=np.stack([ep.commanded[t] for ep, t in zip(ep_list, action_ts)]),
                           geometry=geometry, device=device)


@torch.no_grad()
def action_sensitivity(model, episodes, shift: int, stride: int = 1, batch_size: int = 32, sampler: str = "",
                       sampler_steps: int = 0, seed: int = 0, device="cpu") -> dict:
    """Does the model read the action? On every ``stride``-th t with t + shift < T, the one-step
    prediction of o_{t+1} from the real history is made twice with the same noise: with step t's
    commanded state and action map, and with those of step t + shift (the arm commanded
    elsewhere). Returns {"predicted_change": mean absolute difference of the two predictions,
    "real_change": mean |o_{t+shift+1} - o_{t+1}| (grey levels), "ratio", "transitions"}, or None
    when every episode is shorter than the shift. A model that ignores the action has a ratio near
    0 and continues the video whatever is commanded."""
    from world_env_training.models.world_model import make_scheduler, predict_next_frames
    from world_env_training.models.world_model.memory_bank import select_memory
    from world_env_training.models.world_model.processor_world_model import tensor_to_frames

    cfg = model.config
    memory = (cfg.memory_frames, cfg.memory_recent, cfg.memory_stride)
    sched = make_scheduler(cfg, sampler or cfg.sampler)
    pairs = [(ep, t) for ep in episodes for t in range(0, len(ep.actions) - shift, stride)]
    if not pairs:
        return None  # every episode is shorter than the shift
    predicted, real = [], []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        eps, ts = [ep for ep, _ in chunk], [t for _, t in chunk]
        histories = [ep.frames[select_memory(t, *memory)] for ep, t in chunk]
        frames = []
        for action_ts in (ts, [t + shift for t in ts]):
            batch = _batch_inputs(model, histories, eps, ts, device, action_ts)
            generator = torch.Generator(device).manual_seed(seed + i)
            frames.append(tensor_to_frames(predict_next_frames(model, batch, sched, sampler_steps or None, generator)))
        predicted.append(np.abs(frames[1].astype(np.float64) - frames[0]).mean((1, 2, 3)))
        real += [np.abs(ep.frames[t + shift + 1].astype(np.float64) - ep.frames[t + 1]).mean() for ep, t in chunk]
    predicted_change, real_change = float(np.concatenate(predicted).mean()), float(np.mean(real))
    return {"shift": shift, "predicted_change": predicted_change, "real_change": real_change,
            "ratio": predicted_change / max(real_change, 1e-9), "transitions": len(pairs)}


@torch.no_grad()
def one_step(model, episodes, stride: int = 1, batch_size: int = 32, sampler: str = "", sampler_steps: int = 0,
             seed: int = 0, device="cpu") -> dict:
    """One-step predictions on every ``stride``-th transition: {"psnr", "ssim", "motion_psnr",
    "baseline_psnr", "baseline_ssim", "baseline_motion_psnr"} arrays over the transitions, plus
    "seconds"."""
    from world_env_training.models.world_model import make_scheduler, predict_next_frames
    from world_env_training.models.world_model.memory_bank import select_memory
    from world_env_training.models.world_model.processor_world_model import tensor_to_frames

    cfg = model.config
    memory = (cfg.memory_frames, cfg.memory_recent, cfg.memory_stride)
    sched = make_scheduler(cfg, sampler or cfg.sampler)
    generator = torch.Generator(device).manual_seed(seed)
    pairs = [(ep, t) for ep in episodes for t in range(0, len(ep.actions), stride)]
    preds, targets, lasts = [], [], []
    t0 = time.perf_counter()
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        histories = [ep.frames[select_memory(t, *memory)] for ep, t in chunk]
        batch = _batch_inputs(model, histories, [ep for ep, _ in chunk], [t for _, t in chunk], device)
        preds.append(tensor_to_frames(predict_next_frames(model, batch, sched, sampler_steps or None, generator)))
        targets += [ep.frames[t + 1] for ep, t in chunk]
        lasts += [ep.frames[t] for ep, t in chunk]
    pred, target, last = np.concatenate(preds), np.stack(targets), np.stack(lasts)
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "motion_psnr": motion_psnr(pred, target, last),
            "baseline_psnr": psnr(last, target), "baseline_ssim": ssim(last, target),
            "baseline_motion_psnr": motion_psnr(last, target, last), "seconds": time.perf_counter() - t0}


@torch.no_grad()
def open_loop(model, episodes, horizon: int, starts_per_episode: int, sampler: str = "", sampler_steps: int = 0,
              seed: int = 0, device="cpu", metrics: bool = True) -> dict:
    """Autoregressive rollouts (module docstring): {"psnr", "ssim", "motion_psnr", "baseline_psnr",
    "baseline_ssim", "baseline_motion_psnr"} arrays (rollouts, horizon), "pred" (rollouts,
    horizon, H, W, 3) uint8, "starts" [(episode index, start)]. ``metrics=False``: only "pred",
    "target" and "starts" (whole-episode replays, scored by the reflector instead)."""
    from world_env_training.models.world_model import make_scheduler, predict_next
    from world_env_training.models.world_model.memory_bank import select_memory
    from world_env_training.models.world_model.processor_world_model import (
        DECODED, LATENTS, frames_to_tensor, tensor_to_frames,
    )

    cfg = model.config
    memory = (cfg.memory_frames, cfg.memory_recent, cfg.memory_stride)
    sched = make_scheduler(cfg, sampler or cfg.sampler)
    generator = torch.Generator(device).manual_seed(seed)
    rollouts = []
    for e, ep in enumerate(episodes):
        last_start = len(ep.actions) - horizon
        if last_start < 0:
            continue
        for s in sorted(set(np.linspace(0, last_start, starts_per_episode).round().astype(int).tolist())):
            rollouts.append((e, s))
    if not rollouts:
        raise ValueError(f"horizon={horizon}: longer than every held-out episode")
    frames = [list(episodes[e].frames[:s + 1]) for e, s in rollouts]
    # A latent model rolls out as ImaginedEnv runs it: its own predicted latents and decoded
    # images are carried from step to step, real frames are encoded only where history reads them.
    latents: list[dict] = [{} for _ in rollouts]
    decoded = None
    preds = []
    for h in range(horizon):
        ts = [s + h for _, s in rollouts]
        slots = [select_memory(t, *memory) for t in ts]
        histories = [np.stack([f[i] for i in picks]) for f, picks in zip(frames, slots)]
        batch = _batch_inputs(model, histories, [episodes[e] for e, _ in rollouts], ts, device)
        if model.autoencoder is not None:
            missing = [(r, i) for r, picks in enumerate(slots) for i in set(picks) if i not in latents[r]]
            if missing:
                encoded = model.encode(frames_to_tensor(np.stack([frames[r][i] for r, i in missing]), device))
                for (r, i), z in zip(missing, encoded):
                    latents[r][i] = z
            batch[LATENTS] = torch.stack([torch.stack([latents[r][i] for i in picks]) for r, picks in enumerate(slots)])
            if decoded is None:
                decoded = model.decode(batch[LATENTS][:, 0])
            batch[DECODED] = decoded
        out = predict_next(model, batch, sched, sampler_steps or None, generator)
        new = tensor_to_frames(out["frame"])
        if model.autoencoder is not None:
            for r, z in enumerate(out["latent"]):
                latents[r][ts[r] + 1] = z
            decoded = out["decoded"]
        for f, frame in zip(frames, new):
            f.append(frame)
        preds.append(new)
    pred = np.stack(preds, 1)
    target = np.stack([episodes[e].frames[s + 1:s + 1 + horizon] for e, s in rollouts])
    if not metrics:
        return {"pred": pred, "target": target, "starts": rollouts}
    base = np.stack([copy_last_open_loop(episodes[e].frames, s, horizon) for e, s in rollouts])
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "motion_psnr": motion_psnr(pred, target, base),
            "baseline_psnr": psnr(base, target), "baseline_ssim": ssim(base, target),
            "baseline_motion_psnr": motion_psnr(base, target, base),
            "pred": pred, "target": target, "starts": rollouts}


# --- the report ---------------------------------------------------------------------------------

def _nanmean(values: np.ndarray) -> float:
    """Mean over the finite values (motion PSNR has none where nothing moved); NaN if none."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _parse_checkpoints(items: list[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        label, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        out.append((label or Path(path).name, Path(path)))
    return out


def _run_dir(path: Path) -> Path:
    return path.parents[1] if path.parent.name == "checkpoints" else path


def _start_key(entry: dict) -> tuple:
    return entry["suite"], entry["task_id"], entry["init_state_id"]


def held_out_picks(holdout_file: Path, max_episodes: int, more_episodes: str = "") -> list[tuple]:
    """(dataset, index) of the holdout's held-out episodes, then of those in ``more_episodes``
    (folders separated by commas) whose init state no training episode starts from and that are
    not already picked (same key and seed: the same episode recorded twice); at most
    ``max_episodes`` (0: all)."""
    from world_env_training.data.dataset import Dataset

    info = json.loads(holdout_file.read_text())
    datasets = [Dataset(p) for p in info["datasets"]]
    picks = [(datasets[p["dataset"]], p["index"]) for p in info["held_out"]]
    seen = {_start_key(datasets[p["dataset"]].entry(p["index"])) for p in info["train"]}
    recorded = {(d.entry(i)["key"], d.entry(i).get("seed")) for d, i in picks}
    for folder in filter(None, more_episodes.split(",")):
        extra = Dataset(folder)
        unseen = [e for e in extra.manifest["episodes"] if _start_key(e) not in seen
                  and (e["key"], e.get("seed")) not in recorded]
        print(f"world-model-eval: {folder}: {len(unseen)} of {len(extra.manifest['episodes'])} episodes "
              "start from init states no training episode starts from", flush=True)
        picks += [(extra, e["index"]) for e in unseen]
        recorded |= {(e["key"], e.get("seed")) for e in unseen}
    return picks[:max_episodes or None]


def load_picks(picks: list[tuple], resolution: int, frame_stride: int = 1, arm_map: bool = False,
               gains: tuple[float, float] = (1.0, 1.0)) -> list:
    """The episodes of ``held_out_picks``, loaded with their conditions (``load_episode``)."""
    from world_env_common.robot import PandaModel
    from world_env_training.data.world_model_data import load_episode

    robot = PandaModel()
    return [load_episode(d, i, robot, resolution, frame_stride, arm_map, gains) for d, i in picks]


def held_out_episodes(holdout_file: Path, resolution: int, max_episodes: int, more_episodes: str = "") -> list:
    """``held_out_picks`` loaded."""
    return load_picks(held_out_picks(holdout_file, max_episodes, more_episodes), resolution)


def episode_succeeded(dataset, index: int) -> bool:
    """LIBERO's outcome of a recorded episode (expert demonstrations are kept only on success)."""
    entry = dataset.entry(index)
    return bool(entry.get("succeeded")) or entry.get("source") == "expert"


@torch.no_grad()
def replay_judgement(model, reflector, episodes, succeeded: list[bool], chunk: int = 8, sampler: str = "",
                     sampler_steps: int = 0, seed: int = 0, device="cpu") -> dict:
    """Success as RL sees it through the world model: each episode's recorded actions replayed
    open loop from its first real frame over its whole length, and the reflector judging the
    imagined frames and the real ones at chunk ends (every ``chunk`` steps, LOOP's default).
    Returns {"rows": per episode {key, succeeded, length, real_fire, imagined_fire}, and the
    counts of imagined and real firing among LIBERO's successes and failures}."""
    from world_env_training.eval.reflector_eval import chunk_end_fire

    rows = [None] * len(episodes)
    by_length: dict[int, list[int]] = {}
    for i, ep in enumerate(episodes):
        by_length.setdefault(len(ep.actions), []).append(i)
    for length, members in sorted(by_length.items()):
        loop = open_loop(model, [episodes[i] for i in members], length, 1, sampler, sampler_steps, seed, device,
                         metrics=False)
        for row, i in enumerate(members):
            ep = episodes[i]
            imagined = np.concatenate([ep.frames[:1], loop["pred"][row]])
            fires = [chunk_end_fire(reflector.score_episode(frames, ep.instruction), reflector.threshold, chunk)
                     for frames in (ep.frames, imagined)]
            rows[i] = {"key": ep.key, "succeeded": bool(succeeded[i]), "length": length,
                       "real_fire": fires[0], "imagined_fire": fires[1]}
    counts = {}
    for outcome, name in ((True, "successes"), (False, "failures")):
        group = [r for r in rows if r["succeeded"] == outcome]
        counts[name] = {"episodes": len(group),
                        "imagined_fired": sum(r["imagined_fire"] is not None for r in group),
                        "real_fired": sum(r["real_fire"] is not None for r in group)}
    return {"chunk": chunk, "rows": rows, **counts}


def _replay_lines(label: str, replay: dict) -> list[str]:
    from world_env_training.eval.stats import wilson_interval

    cells = []
    for name in ("successes", "failures"):
        c = replay[name]
        for what in ("imagined_fired", "real_fired"):
            if c["episodes"]:
                low, high = wilson_interval(c[what], c["episodes"])
                cells.append(f"{c[what]}/{c['episodes']} [{100 * low:.0f}, {100 * high:.0f}] %")
            else:
                cells.append("n/a")
    steps = [f"{r['imagined_fire']} vs {r['real_fire']}" for r in replay["rows"] if r["succeeded"]]
    return [f"| {label} | " + " | ".join(cells) + f" | {', '.join(steps)} |"]


def _strip(result: dict, start_frames: list, rollout: int = 0) -> tuple[np.ndarray, list[int]]:
    """Rows real / predicted at horizons 0 (the real start frame), 1, 2, 4, ..."""
    horizon = result["pred"].shape[1]
    hs = [h for h in (1, 2, 4, 8, 16, 32, 64, 128) if h <= horizon]
    start = start_frames[rollout]
    real = [start] + [result["target"][rollout, h - 1] for h in hs]
    pred = [start] + [result["pred"][rollout, h - 1] for h in hs]
    return np.concatenate([np.concatenate(real, 1), np.concatenate(pred, 1)], 0), hs


def evaluate(cfg: WorldModelEvalConfig) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from world_env_training.models.backbones import resolve_device
    from world_env_training.models.world_model import WorldModel

    device = resolve_device(cfg.device)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = _parse_checkpoints(cfg.checkpoints)
    holdout = Path(cfg.holdout) if cfg.holdout else _run_dir(checkpoints[0][1]) / "holdout.json"
    if not holdout.is_file():
        raise FileNotFoundError(f"{holdout}: no holdout.json (give holdout=...)")
    results, loaded, picks, stride = {}, {}, None, None
    reflector = None
    if cfg.reflector:
        from world_env_training.models.reflector import Reflector

        reflector = Reflector.from_pretrained(cfg.reflector, device=device)
    for label, path in checkpoints:
        model = WorldModel.from_pretrained(path, device=device)
        if picks is None:
            picks = held_out_picks(holdout, cfg.max_episodes, cfg.more_episodes)
            if not picks:
                raise ValueError(f"{holdout}: no held-out episodes")
        # Models that step by chunks, or draw the arm, see the same episodes with other conditions.
        conditions = (model.config.resolution, model.config.frame_stride, model.config.arm_map, model.processor.gains)
        if conditions not in loaded:
            loaded[conditions] = load_picks(picks, *conditions)
        episodes = loaded[conditions]
        if stride is None:
            stride = model.config.frame_stride
            # The options count actions; a chunk-level model steps k at a time.
            horizon, one_stride, shift, chunk = (max(1, n // stride) if n else 0 for n in (
                cfg.horizon, cfg.one_step_stride, cfg.action_shift, cfg.replay_chunk))
        elif model.config.frame_stride != stride:
            raise ValueError(f"{label}: frame_stride {model.config.frame_stride}, the first checkpoint's is {stride}; "
                             "evaluate models of different frame strides separately")
        print(f"world-model-eval: {label}: one-step on {len(episodes)} held-out episodes", flush=True)
        one = one_step(model, episodes, one_stride, sampler=cfg.sampler, sampler_steps=cfg.sampler_steps,
                       seed=cfg.seed, device=device)
        print(f"world-model-eval: {label}: open-loop, horizon {horizon}", flush=True)
        loop = open_loop(model, episodes, horizon, cfg.starts_per_episode, cfg.sampler, cfg.sampler_steps,
                         cfg.seed, device)
        strip, hs = _strip(loop, [episodes[e].frames[s] for e, s in loop["starts"]])
        plt.imsave(out / f"strip_{label}.png", strip)
        results[label] = {"one": one, "loop": loop, "strip_horizons": hs,
                          "params": model.parameter_counts()["trainable"], "path": str(path)}
        if shift:
            print(f"world-model-eval: {label}: action sensitivity (commanded state {shift} steps ahead)",
                  flush=True)
            results[label]["action"] = action_sensitivity(
                model, episodes, shift, one_stride, sampler=cfg.sampler,
                sampler_steps=cfg.sampler_steps, seed=cfg.seed, device=device)
        if reflector is not None:
            print(f"world-model-eval: {label}: whole-episode replays judged by the reflector", flush=True)
            results[label]["replay"] = replay_judgement(
                model, reflector, episodes, [episode_succeeded(d, i) for d, i in picks], chunk,
                cfg.sampler, cfg.sampler_steps, cfg.seed, device)

    # --- figures --------------------------------------------------------------------------
    h = np.arange(1, horizon + 1)
    for metric in ("psnr", "ssim"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, r in results.items():
            ax.plot(h, r["loop"][metric].mean(0), label=label)
        first = next(iter(results.values()))
        ax.plot(h, first["loop"][f"baseline_{metric}"].mean(0), "k--", label="copy last frame")
        ax.set_xlabel("open-loop horizon (steps)")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"{metric}_vs_horizon.png", dpi=120)
        plt.close(fig)

    # --- tables ---------------------------------------------------------------------------
    lines = ["# World-model quality on held-out trajectories", "",
             f"Held-out episodes: {len(episodes)} (from `{holdout}`): "
             + ", ".join(f"`{ep.key}`" for ep in episodes),
             f"Sampler: {cfg.sampler or 'model default'}, steps {cfg.sampler_steps or 'model default'}. "
             "Baseline: copy the last real frame."
             + (f" The models predict one frame per chunk of {stride} actions: a step below is a chunk "
                "(the options, which count actions, divided by it)." if stride > 1 else ""), "",
             "## One-step", "",
             f"Motion PSNR: over the pixels whose real change from o_t exceeds {MOTION_THRESHOLD} grey levels, "
             "over the frames with such pixels.", "",
             "| model | params | PSNR dB | baseline PSNR | SSIM | baseline SSIM | motion PSNR | baseline motion PSNR "
             "| frames (with motion) |", "|---|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        o = r["one"]
        lines.append(f"| {label} | {r['params'] / 1e6:.1f} M | {o['psnr'].mean():.2f} | "
                     f"{o['baseline_psnr'].mean():.2f} | {o['ssim'].mean():.4f} | {o['baseline_ssim'].mean():.4f} | "
                     f"{_nanmean(o['motion_psnr']):.2f} | {_nanmean(o['baseline_motion_psnr']):.2f} | {len(o['psnr'])} "
                     f"({int(np.isfinite(o['motion_psnr']).sum())}) |")
    marks = [m for m in (1, 2, 4, 8, 16, 24, 32, 48, 64) if m <= horizon]
    lines += ["", f"## Open-loop (rollouts of {horizon} steps; PSNR dB / SSIM at horizon)", "",
              "| model | " + " | ".join(f"h={m}" for m in marks) + " |", "|---|" + "---|" * len(marks)]
    for label, r in results.items():
        lo = r["loop"]
        lines.append(f"| {label} | " + " | ".join(
            f"{lo['psnr'][:, m - 1].mean():.2f} / {lo['ssim'][:, m - 1].mean():.3f}" for m in marks) + " |")
    first = next(iter(results.values()))["loop"]
    lines.append("| copy last frame | " + " | ".join(
        f"{first['baseline_psnr'][:, m - 1].mean():.2f} / {first['baseline_ssim'][:, m - 1].mean():.3f}"
        for m in marks) + " |")
    lines += ["", f"## Open-loop motion-masked PSNR (dB; pixels whose real change from the start frame exceeds "
              f"{MOTION_THRESHOLD} grey levels)", "",
              "| model | " + " | ".join(f"h={m}" for m in marks) + " |", "|---|" + "---|" * len(marks)]
    for label, r in list(results.items()) + [("copy last frame", None)]:
        values = first["baseline_motion_psnr"] if r is None else r["loop"]["motion_psnr"]
        lines.append(f"| {label} | " + " | ".join(f"{_nanmean(values[:, m - 1]):.2f}" for m in marks) + " |")
    rollouts = len(first["psnr"])
    if rollouts >= 2:
        lines += ["", f"## Open-loop PSNR gain over copy-last-frame (dB, paired over the {rollouts} rollouts: "
                  "mean [95% t-interval], rollouts where the model is closer)", "",
                  "| model | " + " | ".join(f"h={m}" for m in marks) + " |", "|---|" + "---|" * len(marks)]
        for label, r in results.items():
            cells = []
            for m in marks:
                gain = r["loop"]["psnr"][:, m - 1] - r["loop"]["baseline_psnr"][:, m - 1]
                mean, low, high = mean_interval(gain)
                cells.append(f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] {int((gain > 0).sum())}/{rollouts}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if shift:
        lines += ["", f"## Action sensitivity (one-step prediction with the commanded state of {shift} steps "
                  "later instead of the real one)", "",
                  "Mean absolute change of the predicted frame (grey levels) against the real frames' change over the "
                  "same steps; near 0: the model ignores the action.", "",
                  "| model | predicted change | real change | ratio | transitions |", "|---|---|---|---|---|"]
        for label, r in results.items():
            a = r["action"]
            lines.append(f"| {label} | n/a: every episode is shorter than the shift | | | 0 |" if a is None else
                         f"| {label} | {a['predicted_change']:.3f} | {a['real_change']:.3f} | {a['ratio']:.3f} | "
                         f"{a['transitions']} |")
    if reflector is not None:
        lines += ["", "## Whole episodes replayed open loop, judged by the reflector", "",
                  f"Each episode's recorded actions replayed from its first real frame over its whole length; the "
                  f"reflector (`{cfg.reflector}`) judges one frame in {chunk} (steps 0, "
                  f"{chunk}, ...), imagined and real. "
                  "Success and failure are LIBERO's. Wilson 95 % intervals.", "",
                  "| model | successes: imagined fired | successes: real fired | failures: imagined fired "
                  "| failures: real fired | successes' firing step, imagined vs real |", "|---|---|---|---|---|---|"]
        for label, r in results.items():
            lines += _replay_lines(label, r["replay"])
    lines += ["", "Figures: `psnr_vs_horizon.png`, `ssim_vs_horizon.png`; strips `strip_<model>.png` (top real, "
              "bottom open-loop prediction; columns: start frame, then horizons "
              + ", ".join(map(str, next(iter(results.values()))["strip_horizons"])) + ")."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    keys = ("psnr", "ssim", "motion_psnr", "baseline_psnr", "baseline_ssim", "baseline_motion_psnr")
    metrics = {label: {"one_step": {k: _nanmean(r["one"][k]) for k in keys},
                       "open_loop": {k: [_nanmean(column) for column in r["loop"][k].T] for k in keys},
                       "open_loop_rollouts": len(r["loop"]["psnr"]),
                       "params": r["params"], "path": r["path"], **({"replay": r["replay"]} if "replay" in r else {}),
                       **({"action_sensitivity": r["action"]} if "action" in r else {})}
               for label, r in results.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def run(cfg: WorldModelEvalConfig) -> int:
    try:
        evaluate(cfg)
    except (FileNotFoundError, ValueError) as err:
        print(f"world-env evaluate-world-model: {err}", file=sys.stderr)
        return 2
    print((Path(cfg.output_dir) / "report.md").read_text())
    return 0
