"""``world-env post-train``: LOOP post-training of the policy inside the world simulator.

The algorithm is in ``loop.py``; this file is the run around it: inputs, processes, files.
``--env libero`` runs the same LOOP with LIBERO itself as the environment (the control arm,
``libero_rollouts.py``): episodes start from the demos' LIBERO init states and are judged by
LIBERO's success (or, with ``--libero_reward reflector``, by the reflector on real frames).

Inputs. The policy to improve (an SFT run or model folder), the world simulator and the
reflector checkpoints, and a dataset whose episodes' first frames, states, instructions and
cameras are the initial states imagined episodes start from (the 5 demonstrations per task).
Each update draws ``batch_size`` of them (``loop_runner.draw_starts``: uniformly, seeded by
(seed, update), so a resumed run draws what an uninterrupted one would).

Processes. One process: everything on ``device``. Several (``torchrun --nproc_per_node K
-m world_env_training.cli post-train ...``; gloo on CPU, NCCL on GPUs): the update's initial
states are dealt out by rank (rank r takes states r, r+K, ...; ``batch_size`` must divide by K),
each rank rolls its states out and computes its advantages (the N rollouts of a state stay on
one rank, so the leave-one-out baseline is local), and DistributedDataParallel averages the
gradients, so every rank holds the same weights after every step. Every rank runs the same
number of PPO minibatches (``minibatches`` per epoch) so the collectives line up. Logged
figures are summed over ranks.

Files (rank 0 writes), in ``output_dir``: ``checkpoints/step_N`` after every ``save_every``
updates (a VLA model folder + optimiser state, written atomically, then ``latest`` moves), so
``make_policy(output_dir)`` loads the post-trained policy; ``metrics.jsonl`` (one line per
update, the figures below); ``tb/`` (tensorboard); ``strips/update_N.png`` (the frames of
the first imagined episode of that update); ``train_config.yaml``. A run killed at any moment
resumes from its newest checkpoint when started again: completed updates are kept, the
update in progress is redone.

Figures per update (``loop_runner.METRIC_KEYS``, the same keys as the ROS trainer's): return
mean, share of episodes the reflector (or LIBERO's success) ended (``fired``), episode length,
|advantage| mean, PPO loss, clip fraction, approximate KL, policy scale (mean Laplace b of the
sampled chunks), environment frames per second (imagined, or LIBERO's).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from world_env_training.checkpoints import latest_checkpoint, remove_stale
from world_env_training.configs import PostTrainConfig
from world_env_training.data.dataset import DatasetError
from world_env_training.rl.loop import collect_rollouts
from world_env_training.rl.loop_runner import (LoopLearner, draw_starts, load_start_states, ppo_figures, seed_of,
                                               suite_step_limit)


class _Distribution(torch.nn.Module):
    """The policy's action distribution as a module's forward, which is what DDP wraps."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, batch):
        return self.policy.action_distribution(batch)


def _distributed(cfg: PostTrainConfig) -> tuple[int, int]:
    """(rank, world size); joins the process group (NCCL on GPUs, gloo on CPU) under torchrun."""
    from world_env_training.models.backbones import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolve_device(cfg.device).type == "cuda" else "gloo")
    return dist.get_rank(), world


def _device(cfg: PostTrainConfig, world: int) -> torch.device:
    from world_env_training.models.backbones import resolve_device

    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def _sum_over_ranks(values: dict[str, float], world: int) -> dict[str, float]:
    if world == 1:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def _min_over_ranks(value: int, world: int) -> int:
    if world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _save_strip(path: Path, frames: np.ndarray | None, columns: int = 12) -> None:
    if frames is None or not len(frames):
        return
    from PIL import Image

    picks = np.unique(np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([frames[i] for i in picks], axis=1)).save(path)


def train(cfg: PostTrainConfig):
    """Run (or resume) LOOP; returns (newest checkpoint folder, the policy as trained)."""
    from torch.utils.tensorboard import SummaryWriter

    from world_env_common.camera import CameraModel
    from world_env_training.rl.imagined_env import ImaginedEnv
    from world_env_training.models.precision import resolve_precision
    from world_env_training.models.reflector import Reflector
    from world_env_common.robot import PandaModel
    from world_env_training.models.world_model import WorldModel

    rank, world = _distributed(cfg)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size}: must divide by the {world} processes")
    device = _device(cfg, world)
    run_dir = Path(cfg.output_dir)
    if rank == 0:
        remove_stale(run_dir)
    _barrier(world)

    # --- inputs -------------------------------------------------------------------------------
    starts = load_start_states(cfg.demos)
    max_steps = cfg.max_steps or suite_step_limit(starts, cfg.demos)
    judged_by_reflector = cfg.env == "imagined" or cfg.libero_reward == "reflector"
    reflector = Reflector.from_pretrained(cfg.reflector, device) if judged_by_reflector else None
    precision = resolve_precision(cfg.precision, device)
    if reflector is not None:
        reflector.set_precision(precision)
    physics = None  # ArmPhysics of an imagined run with arm physics
    if cfg.env == "libero":
        from world_env_training.rl.libero_rollouts import LiberoRolloutEnv, memory_shortfall

        # every process on this machine holds its own share of the simulators
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        shortfall = memory_shortfall(cfg.batch_size // world * cfg.rollouts_per_state * local)
        if shortfall and rank == 0:
            print(f"post-train: warning: {shortfall}", file=sys.stderr, flush=True)
        libero = LiberoRolloutEnv(cfg.batch_size // world * cfg.rollouts_per_state, starts[0].frame.shape[0],
                                  cfg.libero_workers, render_every_step=judged_by_reflector,
                                  stop_on_success=not judged_by_reflector, seed=cfg.seed)

        def make_env(camera: dict) -> LiberoRolloutEnv:
            return libero
    else:
        libero = None
        world_model = WorldModel.from_pretrained(cfg.world_model, device)
        size = world_model.config.resolution
        if starts[0].frame.shape[:2] != (size, size):
            raise ValueError(f"{cfg.demos}: frames are {starts[0].frame.shape[1]}x{starts[0].frame.shape[0]}, "
                             f"the world model predicts {size}x{size}")
        robot = PandaModel()
        if cfg.arm in ("physics", "scene"):
            from world_env_training.rl.arm_physics import ArmPhysics, resolve_workers

            physics = ArmPhysics.for_start_states(starts, cfg.demos, objects=cfg.arm == "scene",
                                                  workers=resolve_workers(cfg.physics_workers))

        def make_env(camera: dict) -> ImaginedEnv:
            return ImaginedEnv(world_model, robot, CameraModel.from_dict(camera), device,
                               sampler_steps=cfg.sampler_steps or None, seed=seed_of(cfg.seed, update, rank, 1),
                               precision=precision, arm_physics=physics)

    # --- policy: resume from the newest checkpoint, or start from the given one ----------------
    learner = LoopLearner(cfg, device, writer=rank == 0)
    model, resume, start = learner.model, learner.resumed_from, learner.update_count
    if cfg.env == "imagined" and world_model.config.frame_stride not in (1, model.config.chunk_size):
        raise ValueError(f"{cfg.world_model}: the world model predicts one frame per chunk of "
                         f"{world_model.config.frame_stride} actions, the policy's chunks have "
                         f"{model.config.chunk_size}")
    distribution = _Distribution(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        distribution = DistributedDataParallel(distribution,
                                               device_ids=[device.index] if device.type == "cuda" else None)
    if start >= cfg.updates:
        if rank == 0:
            print(f"post-train: {resume} is already at update {start} of {cfg.updates}; nothing to do")
        return resume, model
    if rank == 0:
        where = ("imagined" if cfg.env == "imagined" else
                 f"LIBERO ({'reflector' if judged_by_reflector else 'success'} reward)")
        print(f"post-train: {len(starts)} initial states from {cfg.demos}; {cfg.batch_size} per update x "
              f"{cfg.rollouts_per_state} rollouts, up to {max_steps} {where} steps; {world} process(es) on "
              f"{device}" + (f" ({precision}, precision {cfg.precision})" if judged_by_reflector else "") + "; "
              + (f"resuming at update {start} from {resume}" if resume else f"starting from {cfg.policy}"),
              flush=True)

    # --- updates --------------------------------------------------------------------------------
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None) if rank == 0 else None
    newest = resume
    bar = tqdm(range(start, cfg.updates), initial=start, total=cfg.updates, desc="post-train", unit="update",
               disable=rank != 0)
    try:
        for update in bar:
            t0 = time.perf_counter()
            picks = draw_starts(len(starts), cfg.batch_size, cfg.seed, update)
            mine = [starts[i] for i in picks[rank::world]]
            generator = torch.Generator(device).manual_seed(seed_of(cfg.seed, update, rank, 2))
            frames_bar = tqdm(total=len(mine) * cfg.rollouts_per_state * max_steps,
                              desc="  imagining" if cfg.env == "imagined" else "  in LIBERO",
                              unit="frame", leave=False, disable=rank != 0)
            model.eval()
            rollouts = collect_rollouts(model, reflector, make_env, mine, cfg.rollouts_per_state, max_steps,
                                        generator, cfg.binary_reward, progress=frames_bar.update,
                                        score_every=cfg.reflector_every, temperature=cfg.temperature,
                                        correlation=cfg.correlation)
            frames_bar.close()
            t_rollout = time.perf_counter() - t0

            samples = {"images": rollouts.images, "states": rollouts.states,
                       "instructions": rollouts.instructions, "actions": rollouts.actions}
            # Every rank must run the same number of backward passes; a rank whose episodes all
            # ended on their first frame has nothing to learn from, so then nobody steps.
            sums = learner.update(samples, torch.from_numpy(rollouts.log_probs).to(device), rollouts.returns,
                                  rollouts.episode, distribution, [cfg.seed, update, rank, 3],
                                  lambda kl: _sum_over_ranks({"kl": kl}, world)["kl"] / world,
                                  step=_min_over_ranks(len(rollouts), world) > 0)
            sums.update({"episodes": float(rollouts.returns.size), "return": float(rollouts.returns.sum()),
                         "fired": float(rollouts.fired.sum()), "length": float(rollouts.lengths.sum()),
                         "chunks": float(len(rollouts)), "scale": float(rollouts.scales.sum())})
            total = _sum_over_ranks(sums, world)
            done = update + 1
            seconds = time.perf_counter() - t0
            record = {"env": cfg.env, "episodes": int(total["episodes"]),
                      "return_mean": total["return"] / total["episodes"],
                      "fired_rate": total["fired"] / total["episodes"],
                      "episode_length": total["length"] / total["episodes"],
                      **ppo_figures(total, total["episodes"]),
                      "scale": total["scale"] / max(total["chunks"], 1.0), "chunks": int(total["chunks"]),
                      "frames_per_s": total["length"] / max(t_rollout, 1e-9), "seconds": seconds,
                      "ppo_steps": int(total["minibatches"] / world),
                      "stop_kl": total["stop_kl"] / world if total["kl_stopped"] else None}
            if rank == 0:
                for key, value in record.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        writer.add_scalar(f"loop/{key}", float(value), done)
                bar.set_postfix(ret=f"{record['return_mean']:.3f}", fired=f"{record['fired_rate']:.2f}",
                                kl=f"{record['approx_kl']:.4f}", clip=f"{record['clip_fraction']:.2f}")
                _save_strip(run_dir / "strips" / f"update_{done:04d}.png", rollouts.frames)
            save = done % cfg.save_every == 0 or done == cfg.updates
            learner.finish_update(record, save=save)
            if save:
                if rank == 0:
                    writer.flush()
                _barrier(world)
                newest = latest_checkpoint(run_dir)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if libero is not None:
            libero.close()
        if physics is not None:
            physics.close()
    return newest, model


def run(cfg: PostTrainConfig) -> int:
    try:
        newest, _ = train(cfg)
    except (FileNotFoundError, ValueError, DatasetError) as err:
        print(f"world-env post-train: {err}", file=sys.stderr)
        return 2
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"post-train: done; newest checkpoint {newest} (load it with make_policy({cfg.output_dir!r}))")
    return 0
