"""The imagined arm's physics (``ArmPhysics``): milliseconds per step of one episode with one
scene and with several in parallel, on the same batch and actions, and whether their states agree.

The batch is B episodes from LIBERO's Panda home posture with a little joint noise, stepped
through ``chunks`` chunks of 8 random actions (uniform in [-0.5, 0.5], gripper included), as a
post-train update's physics would be. The reference is one scene in this process.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["bench_physics", "format_report"]

HOME = np.array([0.0, 0.196, 0.0, -2.617, 0.0, 2.94, 0.785])  # robosuite's Panda home posture


def bench_physics(workers=(1, 2), batch_size: int = 16, chunks: int = 4, seed: int = 0,
                  suite: str = "libero_object", task_id: int = 0) -> dict:
    """ms per episode step for each scene count in ``workers`` (module docstring)."""
    from world_env_training.rl.arm_physics import ArmPhysics

    rng = np.random.default_rng(seed)
    joints = HOME + rng.normal(0.0, 0.02, (batch_size, 7))
    actions = rng.uniform(-0.5, 0.5, (chunks, batch_size, 8, 7))
    figures, reference = {}, None
    for count in workers:
        arm = ArmPhysics(suite, task_id, seed=seed, workers=count)
        try:
            arm.reset(joints, np.full(batch_size, 0.08))
            t0 = time.perf_counter()
            states = np.concatenate([arm.step(a)[0] for a in actions], 1)
            seconds = time.perf_counter() - t0
        finally:
            arm.close()
        reference = states if reference is None else reference
        figures[count] = {"ms_per_step": 1000.0 * seconds / states.shape[0] / states.shape[1],
                          "identical_to_first": bool(np.array_equal(states, reference))}
    return {"batch_size": batch_size, "steps": chunks * 8, "suite": suite, "task_id": task_id,
            "workers": figures}


def format_report(result: dict) -> str:
    rows = result["workers"]
    first = next(iter(rows.values()))["ms_per_step"]
    lines = [f"arm physics: {result['batch_size']} episodes x {result['steps']} steps of {result['suite']} "
             f"task {result['task_id']}"]
    for count, fig in rows.items():
        lines.append(f"  {count} scene(s): {fig['ms_per_step']:.2f} ms per episode step, "
                     f"{first / fig['ms_per_step']:.2f}x the first; states identical: {fig['identical_to_first']}")
    return "\n".join(lines)
