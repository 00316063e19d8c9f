"""Speed of the imagined environment against LIBERO, and sampler steps against quality.

Figures:

- imagined frames/s of ``ImaginedEnv.step`` at batch sizes B (default 1, 8, 32): B frames per
  step, ``sampler_steps`` denoising steps each (the default CPU model, random weights unless a
  checkpoint is given: the cost does not depend on the weights), timed over ``steps`` steps
  after one warm-up step at B = 1;
- LIBERO frames/s (one step + one agent-view render) measured in the same run with
  ``bench_libero`` at the same resolution, and the ratio imagined / LIBERO per B;
- with a trained checkpoint: one-step PSNR on its held-out episodes for each sampler step
  count in ``psnr_sampler_steps`` (default 2, 4, 10, 20), next to the copy-last-frame baseline.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

__all__ = ["bench_world_model", "format_report"]


def bench_world_model(checkpoint: str = "", batch_sizes=(1, 8, 32), sampler_steps: int = 10, steps: int = 2,
                      libero: bool = True, libero_steps: int = 30, psnr_sampler_steps=(2, 4, 10, 20),
                      psnr_max_episodes: int = 2, psnr_stride: int = 8, seed: int = 0, device: str = "cpu") -> dict:
    """Measure (see the module docstring); returns a dict of figures."""
    from world_env_common.camera import CameraModel, look_at
    from world_env_training.rl.imagined_env import ImaginedEnv
    from world_env_common.robot import PandaModel
    from world_env_training.models.world_model import WorldModel, WorldModelConfig

    torch.manual_seed(seed)
    model = WorldModel.from_pretrained(checkpoint, device) if checkpoint else WorldModel(WorldModelConfig()).to(device)
    res = model.config.resolution
    camera = CameraModel.from_fovy(45.0, res, res, look_at((0.6, 0.0, 1.4), (-0.1, 0.0, 0.9)))
    robot = PandaModel()
    env = ImaginedEnv(model, robot, camera, device, sampler_steps=sampler_steps, seed=seed)
    rng = np.random.default_rng(seed)
    state0 = np.array([-0.2, 0.0, 1.1, np.pi, 0.0, 0.0, 0.08], np.float32)

    def run_steps(b: int, n: int) -> float:
        env.reset(rng.integers(0, 256, (b, res, res, 3), dtype=np.uint8), np.repeat(state0[None], b, 0), "bench")
        t0 = time.perf_counter()
        for _ in range(n):
            env.step(rng.uniform(-0.3, 0.3, (b, 7)).astype(np.float32))
        return time.perf_counter() - t0

    run_steps(1, 1)
    imagined = {}
    for b in batch_sizes:
        seconds = run_steps(b, steps)
        imagined[b] = {"frames_per_s": b * steps / seconds, "step_s": seconds / steps}
    result = {"resolution": res, "sampler": model.config.sampler, "sampler_steps": sampler_steps,
              "params_trainable": model.parameter_counts()["trainable"], "imagined": imagined,
              "checkpoint": checkpoint, "cpus": len(os.sched_getaffinity(0)), "load_1min": os.getloadavg()[0]}
    if libero:
        from world_env_training.bench.libero import bench_libero

        lib = bench_libero(resolution=res, steps=libero_steps, seed=seed)
        result["libero"] = lib
        for b, fig in imagined.items():
            fig["ratio_to_libero_1proc"] = fig["frames_per_s"] / lib["frames_per_s_1proc"]
    if checkpoint and psnr_sampler_steps:
        from world_env_training.eval.world_model_eval import _run_dir, held_out_episodes, one_step
        from pathlib import Path

        episodes = held_out_episodes(_run_dir(Path(checkpoint)) / "holdout.json", res, psnr_max_episodes)
        quality = {}
        for n in psnr_sampler_steps:
            r = one_step(model, episodes, psnr_stride, sampler_steps=n, seed=seed, device=device)
            quality[n] = {"psnr": float(r["psnr"].mean()), "ssim": float(r["ssim"].mean()),
                          "baseline_psnr": float(r["baseline_psnr"].mean()), "frames": len(r["psnr"]),
                          "seconds": r["seconds"]}
        result["sampler_quality"] = quality
    return result


def format_report(r: dict) -> str:
    lines = [f"world model: imagined environment at {r['resolution']}x{r['resolution']}, {r['sampler']} "
             f"{r['sampler_steps']} steps, {r['params_trainable'] / 1e6:.1f} M trained parameters "
             f"({r['cpus']} cpus, load {r['load_1min']:.1f})"]
    lib = r.get("libero")
    if lib:
        lines.append(f"  LIBERO step + render: {lib['frames_per_s_1proc']:.1f} frames/s (1 process), "
                     f"{lib['frames_per_s_2proc']:.1f} frames/s (2 processes)")
    for b, fig in r["imagined"].items():
        ratio = f", {fig['ratio_to_libero_1proc']:.3f}x LIBERO" if "ratio_to_libero_1proc" in fig else ""
        lines.append(f"  B={b:>3}: {fig['frames_per_s']:.2f} imagined frames/s ({fig['step_s']:.2f} s per step){ratio}")
    for n, q in r.get("sampler_quality", {}).items():
        lines.append(f"  sampler steps {n:>3}: one-step PSNR {q['psnr']:.2f} dB (copy-last {q['baseline_psnr']:.2f}), "
                     f"SSIM {q['ssim']:.4f}, {q['frames']} frames in {q['seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--batch_sizes", default="1,8,32")
    parser.add_argument("--sampler_steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--no_libero", action="store_true")
    args = parser.parse_args()
    print(format_report(bench_world_model(args.checkpoint, [int(b) for b in args.batch_sizes.split(",")],
                                          args.sampler_steps, args.steps, not args.no_libero)))
