"""Measure the scripted experts (experts.py) on LIBERO's fixed init states.

    python -m world_env_training.eval.expert_eval libero_object --inits 0-9 --workers 2

Episodes follow the standard LIBERO evaluation: set the init state, 10 settle steps with the
gripper open, then expert actions until ``check_success`` or the suite's step limit. By default
no camera is rendered (the expert reads privileged state only, and rendering dominates the
step cost); ``render=True`` uses 32x32 cameras to exercise the exact evaluation env.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path
from typing import Iterable

import numpy as np
from world_env_libero.env import load_triton_before_rendering

# Evaluation step limits per suite (the common OpenVLA / OpenVLA-OFT settings).
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
SETTLE_STEPS = 10


def make_env(suite_name: str, task_id: int, render: bool = False):
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv
    from libero.libero.envs.env_wrapper import ControlEnv

    suite = benchmark.get_benchmark(suite_name)(task_order_index=0)
    task = suite.get_task(task_id)
    bddl = str(Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file)
    if render:
        load_triton_before_rendering()
        env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=32, camera_widths=32)
    else:
        env = ControlEnv(bddl_file_name=bddl, use_camera_obs=False, has_offscreen_renderer=False)
    return env, task, suite.get_task_init_states(task_id)


def run_episode(env, init_state, expert, max_steps: int, seed: int = 0) -> dict:
    """One episode; returns success, steps (control steps after settling) and the failing phase."""
    env.seed(seed)
    env.reset()
    obs = env.set_init_state(init_state)
    for _ in range(SETTLE_STEPS):
        obs, _, _, _ = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    expert.reset()
    for t in range(max_steps):
        obs, _, _, _ = env.step(expert.act(obs))
        if env.check_success():
            return {"success": True, "steps": t + 1, "phase": expert.phase}
        if expert.done and t > 0:
            # Let things settle briefly (a released object may still be falling into place).
            for k in range(15):
                obs, _, _, _ = env.step(expert.act(obs))
                if env.check_success():
                    return {"success": True, "steps": t + 2 + k, "phase": expert.phase}
            return {"success": False, "steps": t + 1, "phase": "plan finished without success"}
    return {"success": False, "steps": max_steps, "phase": f"timeout in: {expert.phase}"}


def _eval_task(args) -> dict:
    suite_name, task_id, init_ids, seed, render = args
    from world_env_training.policies.experts import UnsupportedGoal, make_expert

    env, task, init_states = make_env(suite_name, task_id, render)
    max_steps = MAX_STEPS[suite_name]
    episodes = []
    try:
        for i in init_ids:
            try:
                expert = make_expert(env.env)
                ep = run_episode(env, init_states[i], expert, max_steps, seed=seed)
            except UnsupportedGoal as e:
                ep = {"success": False, "steps": 0, "phase": f"unsupported: {e}"}
            ep["init"] = int(i)
            episodes.append(ep)
    finally:
        env.close()
    ok = [e for e in episodes if e["success"]]
    reasons: dict[str, int] = {}
    for e in episodes:
        if not e["success"]:
            reasons[e["phase"]] = reasons.get(e["phase"], 0) + 1
    return {
        "suite": suite_name,
        "task_id": task_id,
        "instruction": task.language,
        "successes": len(ok),
        "episodes": len(episodes),
        "mean_steps": float(np.mean([e["steps"] for e in ok])) if ok else float("nan"),
        "failures": reasons,
        "episode_results": episodes,
    }


def evaluate_expert(suite: str, task_ids: Iterable[int] | None = None, init_state_ids: Iterable[int] = range(10),
                    seed: int = 0, workers: int = 1, render: bool = False) -> dict:
    """Per-task expert success on ``suite``'s fixed init states: {task_id: result dict}."""
    task_ids = list(range(10) if task_ids is None else task_ids)
    jobs = [(suite, t, list(init_state_ids), seed, render) for t in task_ids]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_eval_task, jobs, chunksize=1)
    else:
        results = [_eval_task(j) for j in jobs]
    return {r["task_id"]: r for r in results}


def format_table(d: dict) -> str:
    """Markdown table of ``evaluate_expert`` results (one or several suites merged)."""
    rows = ["| suite | task | instruction | success | mean steps | failures |", "|---|---|---|---|---|---|"]
    for r in d.values():
        fails = "; ".join(f"{k} x{v}" for k, v in r["failures"].items()) or "-"
        steps = "-" if np.isnan(r["mean_steps"]) else f"{r['mean_steps']:.0f}"
        rows.append(f"| {r['suite']} | {r['task_id']} | {r['instruction']} | {r['successes']}/{r['episodes']} "
                    f"| {steps} | {fails} |")
    return "\n".join(rows)


def _parse_range(s: str) -> list[int]:
    out: list[int] = []
    for part in s.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite")
    p.add_argument("--tasks", default="0-9")
    p.add_argument("--inits", default="0-9")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--render", action="store_true")
    args = p.parse_args(argv)
    t0 = time.time()
    res = evaluate_expert(args.suite, _parse_range(args.tasks), _parse_range(args.inits),
                          workers=args.workers, render=args.render)
    print(format_table(res))
    for r in res.values():
        bad = [(e["init"], e["phase"]) for e in r["episode_results"] if not e["success"]]
        if bad:
            print(f"task {r['task_id']} failed inits: {bad}")
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
