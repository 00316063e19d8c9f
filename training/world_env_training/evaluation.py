"""``world-env evaluate``: success rates in real LIBERO under the paper's two protocols.

- ``gt_termination``: an episode ends as soon as the simulator reports success, or at the
  suite's step limit; success = the task was achieved.
- ``self_termination``: the simulator's success signal is not used to stop; the policy (or a
  reflector) decides when to stop, or the step limit does; success is judged on the final
  state. A policy that achieves the task and then undoes it fails here.

Episode k of a task starts from LIBERO's fixed init state k. Work is spread over worker
processes, one simulator each. Results: ``eval.json`` (every episode, per task, per suite)
and ``eval.md`` (the table) in the output folder.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from world_env_training.configs import TASKS_PER_SUITE, EvaluateConfig
from world_env_training.policies import make_policy
from world_env_training.stats import wilson_interval

PROTOCOLS = ("gt_termination", "self_termination")
EPISODES_PER_JOB = 5  # amortises building a simulator (~5 s) over several episodes


@dataclass(frozen=True)
class Job:
    suite: str
    task_id: int
    protocol: str
    init_state_ids: tuple[int, ...]
    policy: str
    resolution: int
    seed: int
    device: str


def run_episode(env, policy, init_state_id: int, protocol: str) -> dict:
    """One episode under ``protocol``; returns its record."""
    obs = env.reset(init_state_id)
    policy.reset(env)
    success, steps, ended = False, 0, "step_limit"
    for steps in range(1, env.max_steps + 1):
        obs, success = env.step(policy.act(obs))
        if protocol == "gt_termination" and success:
            ended = "success"
            break
        if protocol == "self_termination" and policy.done:
            ended = "policy"
            break
    return {"init_state_id": int(init_state_id), "success": bool(success), "steps": steps, "ended": ended}


def _run_job(job: Job) -> tuple[Job, str, list[dict]]:
    from world_env_libero.env import LiberoEnv

    policy = make_policy(job.policy, seed=job.seed, device=job.device)
    with LiberoEnv(job.suite, job.task_id, resolution=job.resolution, seed=job.seed) as env:
        records = [run_episode(env, policy, i, job.protocol) for i in job.init_state_ids]
        return job, env.instruction, records


def _jobs(cfg: EvaluateConfig) -> list[Job]:
    protocols = PROTOCOLS if cfg.protocol == "both" else (cfg.protocol,)
    ids = list(range(cfg.episodes_per_task))
    chunks = [tuple(ids[i:i + EPISODES_PER_JOB]) for i in range(0, len(ids), EPISODES_PER_JOB)]
    tasks = cfg.task_ids or range(TASKS_PER_SUITE)
    return [Job(suite, task, protocol, chunk, cfg.policy, cfg.resolution, cfg.seed, cfg.device)
            for suite in cfg.suites for task in tasks
            for protocol in protocols for chunk in chunks]


def _rate(records: list[dict]) -> dict:
    n = len(records)
    k = sum(r["success"] for r in records)
    low, high = wilson_interval(k, n)
    return {"successes": k, "episodes": n, "rate": k / n, "ci95": [low, high],
            "mean_steps": float(np.mean([r["steps"] for r in records]))}


def summarise(records: list[dict]) -> dict:
    """Group episode records (with suite, task_id, protocol, instruction) into rates."""
    out = {"tasks": {}, "suites": {}, "overall": {}}
    keys = sorted({(r["suite"], r["task_id"]) for r in records})
    protocols = sorted({r["protocol"] for r in records})
    for suite, task in keys:
        rows = [r for r in records if (r["suite"], r["task_id"]) == (suite, task)]
        out["tasks"][f"{suite}/{task}"] = {
            "suite": suite, "task_id": task, "instruction": rows[0]["instruction"],
            **{p: _rate([r for r in rows if r["protocol"] == p]) for p in protocols}}
    for suite in sorted({s for s, _ in keys}):
        out["suites"][suite] = {p: _rate([r for r in records if r["suite"] == suite and r["protocol"] == p])
                                for p in protocols}
    out["overall"] = {p: _rate([r for r in records if r["protocol"] == p]) for p in protocols}
    return out


def _cell(rate: dict | None) -> str:
    if rate is None:
        return "-"
    low, high = rate["ci95"]
    return f"{100 * rate['rate']:.1f} [{100 * low:.1f}, {100 * high:.1f}] ({rate['successes']}/{rate['episodes']})"


def markdown_table(summary: dict, policy: str) -> str:
    protocols = [p for p in PROTOCOLS if p in summary["overall"]]
    names = {"gt_termination": "success %, GT termination [95% CI]",
             "self_termination": "success %, self-termination [95% CI]"}
    head = "| suite | task | instruction | " + " | ".join(names[p] for p in protocols) + " |"
    rule = "|---|---|---|" + "---|" * len(protocols)
    lines = [f"Policy: `{policy}`", "", head, rule]
    for row in summary["tasks"].values():
        cells = " | ".join(_cell(row.get(p)) for p in protocols)
        lines.append(f"| {row['suite']} | {row['task_id']} | {row['instruction']} | {cells} |")
    for suite, rates in summary["suites"].items():
        lines.append(f"| **{suite}** | all | | " + " | ".join(_cell(rates.get(p)) for p in protocols) + " |")
    lines.append("| **overall** | | | " + " | ".join(_cell(summary["overall"].get(p)) for p in protocols) + " |")
    return "\n".join(lines) + "\n"


def evaluate(cfg: EvaluateConfig) -> dict:
    """Run every episode the config asks for; returns the summary (and writes the files)."""
    jobs = _jobs(cfg)
    records = []
    total = sum(len(j.init_state_ids) for j in jobs)
    ctx = mp.get_context("spawn")  # simulators and torch do not survive fork well
    with tqdm(total=total, desc=f"evaluate {cfg.policy}", unit="episode") as bar, \
            ctx.Pool(min(cfg.workers, len(jobs))) as pool:
        for job, instruction, recs in pool.imap_unordered(_run_job, jobs):
            for rec in recs:
                records.append({"suite": job.suite, "task_id": job.task_id, "protocol": job.protocol,
                                "instruction": instruction, **rec})
            bar.update(len(recs))
    records.sort(key=lambda r: (r["suite"], r["task_id"], r["protocol"], r["init_state_id"]))
    summary = summarise(records)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps({"config": cfg.to_dict(), "summary": summary,
                                               "episodes": records}, indent=1))
    (out / "eval.md").write_text(markdown_table(summary, cfg.policy))
    return summary


def run(cfg: EvaluateConfig) -> int:
    try:
        summary = evaluate(cfg)
    except (FileNotFoundError, ValueError) as err:
        print(f"world-env evaluate: {err}", file=sys.stderr)
        return 2
    print(markdown_table(summary, cfg.policy))
    print(f"written: {Path(cfg.output_dir) / 'eval.json'}, {Path(cfg.output_dir) / 'eval.md'}")
    return 0
