"""Throughput of the LIBERO environment on this machine (``world_env_libero``).

Three figures, all with the same random actions from one init state (no settle steps):

- physics: control steps/s of the simulator alone (``LiberoEnv.raw.step``: robosuite's camera
  observables are off, so nothing is rendered);
- 1 process: frames/s of ``LiberoEnv.step``, i.e. a step plus one agent-view render;
- 2 processes: aggregate frames/s of ``VecLiberoEnv`` with 2 envs on 2 workers;
- rendered only when read: steps/s when a frame is rendered once per chunk of ``chunk`` steps
  (what a chunked policy reads; ``evaluate`` and ``post-train --env libero`` do this), in one
  process (``LiberoEnv.step(render=False)`` + ``render``) and in two (``VecLiberoEnv.step_chunk``),
  against rendering every step;
- reset: seconds per ``LiberoEnv.reset`` (its first one, a hard reset; later ones keep the model)
  against LIBERO's own hard reset + ``set_init_state``, which the standard evaluation runs
  before every episode.

LIBERO renders on the CPU here (EGL with Mesa's llvmpipe), which already spreads one render
over all cores (LP_NUM_THREADS), and a render costs about the same at 64 and 128 pixels (fixed
per-frame costs dominate), so the 2-process gain stays well below 2; other load on the machine
lowers every figure (the 1-minute load average is recorded).
"""

from __future__ import annotations

import os
import time

import numpy as np

__all__ = ["bench_libero", "format_report"]

RESETS = 3  # resets timed per kind


def _actions(steps: int, seed: int) -> np.ndarray:
    """(steps, 7) moderate random deltas and a random gripper command (+-1)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-0.5, 0.5, (steps, 7))
    a[:, 6] = np.sign(a[:, 6])
    return a


def bench_libero(resolution: int = 128, steps: int = 48, seed: int = 0,
                 suite: str = "libero_object", task_id: int = 0, chunk: int = 8) -> dict:
    """Measure LIBERO throughput at ``resolution`` (square) over ``steps`` control steps.

    Returns a dict: physics_steps_per_s, frames_per_s_1proc, frames_per_s_2proc,
    ratio_2proc_1proc, render_ms (agent-view render + state per step, = 1-process step time
    minus physics step time), vec_startup_s (starting 2 workers and building their envs),
    chunk_steps_per_s_1proc / _2proc (rendering once per ``chunk`` steps) and their ratios to
    rendering every step, first_reset_s, reset_s and libero_reset_s (module doc), plus
    resolution, steps, chunk, suite, task_id, cpus (usable cores) and load_1min.
    """
    from world_env_libero import LiberoEnv, VecLiberoEnv

    actions = _actions(steps, seed)
    chunk = max(1, min(chunk, steps))
    spec = dict(suite=suite, task_id=task_id, resolution=resolution)
    with LiberoEnv(**spec) as env:
        t0 = time.perf_counter()
        env.reset(0, settle_steps=0)
        first_reset_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for a in actions:
            env.raw.step(a)
        physics_s = time.perf_counter() - t0

        env.reset(0, settle_steps=0)
        t0 = time.perf_counter()
        for a in actions:
            env.step(a)
        single_s = time.perf_counter() - t0

        env.reset(0, settle_steps=0)
        t0 = time.perf_counter()
        for t, a in enumerate(actions, 1):
            env.step(a, render=False)
            if t % chunk == 0:
                env.render()
        chunked_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for i in range(RESETS):
            env.reset(i, settle_steps=0)
        reset_s = (time.perf_counter() - t0) / RESETS
        t0 = time.perf_counter()
        for i in range(RESETS):
            env.raw.seed(env.seed)
            env.raw.reset()
            env.raw.set_init_state(env._init_states[i])
        libero_reset_s = (time.perf_counter() - t0) / RESETS

    t0 = time.perf_counter()
    with VecLiberoEnv([spec, dict(spec)], num_workers=2) as venv:
        startup_s = time.perf_counter() - t0
        venv.reset([0, 0], settle_steps=0)
        t0 = time.perf_counter()
        for a in actions:
            venv.step(np.stack([a, a]))
        vec_s = time.perf_counter() - t0

        venv.reset([0, 0], settle_steps=0)
        chunks = actions[:steps - steps % chunk].reshape(-1, chunk, 7)
        t0 = time.perf_counter()
        for c in chunks:
            venv.step_chunk(np.stack([c, c]), [0, 1], render="last", stop_on_success=False)
        vec_chunked_s = time.perf_counter() - t0

    fps1, fps2 = steps / single_s, 2 * steps / vec_s
    chunk1, chunk2 = steps / chunked_s, 2 * chunks.size / 7 / vec_chunked_s
    return {
        "resolution": resolution, "steps": steps, "suite": suite, "task_id": task_id,
        "physics_steps_per_s": steps / physics_s,
        "frames_per_s_1proc": fps1,
        "frames_per_s_2proc": fps2,
        "ratio_2proc_1proc": fps2 / fps1,
        "render_ms": 1000.0 * (single_s - physics_s) / steps,
        "vec_startup_s": startup_s,
        "chunk": chunk, "chunk_steps_per_s_1proc": chunk1, "chunk_steps_per_s_2proc": chunk2,
        "chunk_ratio_1proc": chunk1 / fps1, "chunk_ratio_2proc": chunk2 / fps2,
        "first_reset_s": first_reset_s, "reset_s": reset_s, "libero_reset_s": libero_reset_s,
        "cpus": len(os.sched_getaffinity(0)),
        "load_1min": os.getloadavg()[0],
    }


def format_report(d: dict) -> str:
    """Human-readable summary of ``bench_libero``'s dict."""
    r = d["resolution"]
    return "\n".join([
        f"LIBERO throughput ({d['suite']} task {d['task_id']}, {r}x{r}, {d['steps']} steps, "
        f"{d['cpus']} cores, load {d['load_1min']:.1f})",
        f"  physics only:            {d['physics_steps_per_s']:7.1f} steps/s",
        f"  step + agentview, 1 proc: {d['frames_per_s_1proc']:6.1f} frames/s "
        f"(render {d['render_ms']:.1f} ms/frame)",
        f"  step + agentview, 2 procs: {d['frames_per_s_2proc']:5.1f} frames/s in all "
        f"(x{d['ratio_2proc_1proc']:.2f} of 1 process; workers up in {d['vec_startup_s']:.1f} s)",
        f"  render once per {d['chunk']} steps, 1 proc: {d['chunk_steps_per_s_1proc']:6.1f} steps/s "
        f"(x{d['chunk_ratio_1proc']:.2f} of rendering every step)",
        f"  render once per {d['chunk']} steps, 2 procs: {d['chunk_steps_per_s_2proc']:5.1f} steps/s in all "
        f"(x{d['chunk_ratio_2proc']:.2f} of rendering every step)",
        f"  reset: {d['reset_s']:.2f} s (first, hard: {d['first_reset_s']:.2f} s; LIBERO's hard reset + "
        f"set_init_state: {d['libero_reset_s']:.2f} s, x{d['libero_reset_s'] / d['reset_s']:.1f})",
    ])


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, nargs="+", default=[128])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for res in args.resolution:
        print(format_report(bench_libero(res, args.steps, args.seed)), flush=True)


if __name__ == "__main__":
    main()
