"""``world-env evaluate``: success rates in real LIBERO under the paper's two protocols.

- ``gt_termination``: an episode ends as soon as the simulator reports success, or at the
  suite's step limit; success = the task was achieved.
- ``self_termination``: the simulator's success signal is not used to stop; the reflector (when
  one is given: it scores the first frame and every ``reflector_every``-th, by default one per
  chunk as in LOOP's imagined episodes, and ends the episode when R > eta), the policy's own done
  signal, or the step limit ends the episode; success is judged on the final state. A policy that
  achieves the task and then undoes it fails here.

Init states are held out: the init states of the datasets the policy's training used
(``training_datasets``: demonstrations, exploration; LOOP's start states and the world model's
data come from these) are excluded, and ``episodes_per_task`` states per task are chosen, seeded,
from the rest of LIBERO's 50 saved states (``init_state_source saved``), or taken from the drawn
states, ids 50 on (``drawn``: scenes LIBERO's own samplers draw, as many as asked), or given
explicitly with ``init_state_ids``. ``eval.json`` records both sets.

Frames are rendered only when something reads them (the policy at chunk boundaries, the
reflector when it scores); rendering costs several times a physics step on the CPU renderer.

With ``protocol both`` and a deterministic policy (a checkpoint acting on its chunks' means; the
zero policy), one simulated episode per init state serves both protocols: the simulator is
seeded, so the two protocols' episodes are the same trajectory up to where each ends (the
reflector only reads frames). The episode runs until both have ended, and each protocol's record
is cut where it ended; the records equal those of separate runs (tested), for the cost of the
longer of the two instead of their sum. A checkpoint that samples its chunks (``sample``) is
deterministic in the same way: its draws restart from a seed of (seed, init state) in every
episode. A policy whose draws carry over between episodes (the scripted expert's noise) runs
each protocol's episodes apart, as before.

Work is spread over worker processes, one simulator each, sharing the cores among them (torch
threads). A worker keeps its policy, reflector and simulator from one job to the next: loading
the policy's LLM alone takes longer than a LIBERO episode. Results: ``eval.json`` (every episode
with who ended it and when, per task, per suite) and ``eval.md`` (the table) in the output folder.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from world_env_training.configs import SUITES, TASKS_PER_SUITE, EvaluateConfig
from world_env_training.data.dataset import init_states_used
from world_env_training.policies import make_policy
from world_env_training.eval.stats import wilson_interval

PROTOCOLS = ("gt_termination", "self_termination")
ENDINGS = ("success", "reflector", "policy", "step_limit")
EPISODES_PER_JOB = 3  # workers keep their simulator and models, so jobs can be small (balance)
INIT_STATES_PER_TASK = 50  # LIBERO's saved init states per task; ids from here on are drawn


@dataclass(frozen=True)
class Job:
    suite: str
    task_id: int
    protocols: tuple[str, ...]
    init_state_ids: tuple[int, ...]
    policy: str
    resolution: int
    seed: int
    device: str
    reflector: str = ""
    reflector_every: int = 8
    sample: bool = False
    temperature: float = 1.0
    correlation: float = 0.0


def episode_seed(seed: int, init_state_id: int) -> int:
    """The seed a sampling policy's draws restart from in the episode from ``init_state_id``."""
    return int(np.random.SeedSequence([seed, init_state_id]).generate_state(1)[0])


def run_episode(env, policy, init_state_id: int, protocols, judge=None, judge_every: int = 1,
                seed: int = 0) -> dict[str, dict]:
    """One simulated episode, recorded under each of ``protocols`` (a name or a tuple of them);
    returns {protocol: record}, each record cut where that protocol ended the episode.
    A policy with ``reseed`` (a checkpoint's chunk sampler) restarts its draws from
    ``episode_seed(seed, init_state_id)``.

    judge: a ``ReflectorSession`` of one episode (self-termination only); it scores o_0, the
    frame of every ``judge_every``-th step and of the last step, and ends the episode when it
    fires. ``ended``: success (GT termination), reflector, policy or step_limit; ``steps``:
    actions taken; ``renders``: frames rendered after the reset until that protocol's end (with
    both protocols, the reflector's frames count in the GT record too).
    """
    protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
    obs = env.reset(init_state_id)
    policy.reset(env)
    if hasattr(policy, "reseed"):
        policy.reseed(episode_seed(seed, init_state_id))
    records: dict[str, dict] = {}
    success, renders, reward = False, 0, None

    def end(protocol: str, steps: int, ended: str) -> None:
        records[protocol] = {"init_state_id": int(init_state_id), "success": bool(success), "steps": steps,
                             "ended": ended, "renders": renders}
        if protocol == "self_termination" and reward is not None:
            records[protocol]["reward"] = float(reward)

    selfish = "self_termination" in protocols
    if judge is not None and selfish:
        judge.reset(env.instruction)
        reward, fired = judge.score(obs["image"])
        if fired:
            end("self_termination", 0, "reflector")
    for steps in range(1, env.max_steps + 1):
        if len(records) == len(protocols):
            break
        judging = judge is not None and selfish and "self_termination" not in records
        action = policy.act(obs)
        judged = judging and (steps % judge_every == 0 or steps == env.max_steps)
        render = judged or getattr(policy, "wants_frame", True)
        obs, success = env.step(action, render=render)
        renders += int(render)
        if "gt_termination" in protocols and "gt_termination" not in records and success:
            end("gt_termination", steps, "success")
        if judged:
            reward, fired = judge.score(obs["image"])
            if fired:
                end("self_termination", steps, "reflector")
        if selfish and "self_termination" not in records and policy.done:
            end("self_termination", steps, "policy")
    for protocol in protocols:
        if protocol not in records:
            end(protocol, steps, "step_limit")
    return records


_KEPT: dict = {}  # a worker's policy, reflector and simulator, kept from one job to the next


def _kept(key: tuple, build):
    """The object ``build()`` made for ``key`` in this worker, made once; a new key replaces the
    old object of its kind (closing a simulator)."""
    kind = key[0]
    if kind in _KEPT and _KEPT[kind][0] != key:
        old = _KEPT.pop(kind)[1]
        if hasattr(old, "close"):
            old.close()
    if kind not in _KEPT:
        _KEPT[kind] = (key, build())
    return _KEPT[kind][1]


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_job(job: Job) -> tuple[Job, str, list[tuple[str, dict]]]:
    from world_env_libero.env import LiberoEnv

    def new_policy():
        # A checkpoint acts on its chunks' means, or reseeds its draws every episode, so a kept
        # one acts as a fresh one would; built-in policies are cheap and some carry a seeded
        # state, so they are made anew.
        if Path(job.policy).is_dir():
            return _kept(("policy", job.policy, job.seed, job.device, job.sample, job.temperature,
                          job.correlation),
                         lambda: make_policy(job.policy, seed=job.seed, device=job.device, sample=job.sample,
                                             temperature=job.temperature, correlation=job.correlation))
        return make_policy(job.policy, seed=job.seed, device=job.device)

    policy = new_policy()
    judge = None
    if job.reflector and "self_termination" in job.protocols:
        from world_env_training.models.backbones import resolve_device
        from world_env_training.models.reflector import Reflector

        reflector = _kept(("reflector", job.reflector, job.device),
                          lambda: Reflector.from_pretrained(job.reflector, device=resolve_device(job.device)))
        judge = reflector.session(1)
    env = _kept(("env", job.suite, job.task_id, job.resolution, job.seed),
                lambda: LiberoEnv(job.suite, job.task_id, resolution=job.resolution, seed=job.seed))
    if getattr(policy, "deterministic", False) or hasattr(policy, "reseed"):  # one episode serves every protocol
        records = [record for i in job.init_state_ids
                   for record in run_episode(env, policy, i, job.protocols, judge, job.reflector_every,
                                             job.seed).items()]
    else:
        records = []
        for n, protocol in enumerate(job.protocols):
            policy = policy if n == 0 else new_policy()
            records += [(protocol,
                         run_episode(env, policy, i, protocol, judge, job.reflector_every, job.seed)[protocol])
                        for i in job.init_state_ids]
    return job, env.instruction, records


def choose_init_states(cfg: EvaluateConfig,
                       training: dict[tuple[str, int], list[int]]) -> dict[tuple[str, int], list[int]]:
    """{(suite, task): init state ids to evaluate}: ``cfg.init_state_ids`` if given, else
    ``episodes_per_task`` ids no training dataset used: saved ones chosen without replacement
    (seeded by ``cfg.seed``, suite and task), or the first drawn ones. Raises ValueError if too
    few saved ones are held out, or if an explicit id was used in training."""
    chosen = {}
    for suite in cfg.suites:
        for task in cfg.task_ids or range(TASKS_PER_SUITE):
            used = set(training.get((suite, task), []))
            if cfg.init_state_ids:
                clash = sorted(used & set(cfg.init_state_ids))
                if clash:
                    raise ValueError(f"init_state_ids {clash} of {suite} task {task} were used in training "
                                     f"(training_datasets); evaluate on held-out init states")
                chosen[(suite, task)] = list(cfg.init_state_ids)
                continue
            if cfg.init_state_source == "drawn":
                ids = (i for i in itertools.count(INIT_STATES_PER_TASK) if i not in used)
                chosen[(suite, task)] = list(itertools.islice(ids, cfg.episodes_per_task))
                continue
            held_out = [i for i in range(INIT_STATES_PER_TASK) if i not in used]
            if len(held_out) < cfg.episodes_per_task:
                raise ValueError(f"episodes_per_task={cfg.episodes_per_task}: {suite} task {task} has only "
                                 f"{len(held_out)} init states that no training dataset used")
            rng = np.random.default_rng([cfg.seed, SUITES.index(suite), task])
            chosen[(suite, task)] = sorted(int(i) for i in rng.choice(held_out, cfg.episodes_per_task, replace=False))
    return chosen


def _jobs(cfg: EvaluateConfig, init_states: dict[tuple[str, int], list[int]]) -> list[Job]:
    protocols = PROTOCOLS if cfg.protocol == "both" else (cfg.protocol,)
    jobs = []
    for (suite, task), ids in init_states.items():
        for i in range(0, len(ids), EPISODES_PER_JOB):
            jobs.append(Job(suite, task, protocols, tuple(ids[i:i + EPISODES_PER_JOB]), cfg.policy,
                            cfg.resolution, cfg.seed, cfg.device, cfg.reflector, cfg.reflector_every,
                            cfg.sample, cfg.temperature, cfg.correlation))
    return jobs


def _rate(records: list[dict]) -> dict:
    n = len(records)
    k = sum(r["success"] for r in records)
    low, high = wilson_interval(k, n)
    return {"successes": k, "episodes": n, "rate": k / n, "ci95": [low, high],
            "mean_steps": float(np.mean([r["steps"] for r in records])),
            "ended": {reason: sum(r["ended"] == reason for r in records) for reason in ENDINGS}}


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


def split_note(init_states: dict, training: dict) -> str:
    """Which init states were evaluated and which the policy's training used, per task."""
    if not training:
        head = "Init states (no training datasets given: held-out status not checked):"
    else:
        head = "Init states: evaluated ones are held out (no training dataset starts from them):"
    lines = [head]
    for (suite, task), ids in init_states.items():
        lines.append(f"- {suite}/{task}: evaluated {ids}; training used {training.get((suite, task), [])}")
    return "\n".join(lines)


def markdown_table(summary: dict, policy: str, init_states: dict | None = None, training: dict | None = None) -> str:
    protocols = [p for p in PROTOCOLS if p in summary["overall"]]
    names = {"gt_termination": "success %, GT termination [95% CI]",
             "self_termination": "success %, self-termination [95% CI]"}
    head = "| suite | task | instruction | " + " | ".join(names[p] for p in protocols) + " |"
    rule = "|---|---|---|" + "---|" * len(protocols)
    lines = [f"Policy: `{policy}`", ""]
    if init_states is not None:
        lines += [split_note(init_states, training or {}), ""]
    lines += [head, rule]
    for row in summary["tasks"].values():
        cells = " | ".join(_cell(row.get(p)) for p in protocols)
        lines.append(f"| {row['suite']} | {row['task_id']} | {row['instruction']} | {cells} |")
    for suite, rates in summary["suites"].items():
        lines.append(f"| **{suite}** | all | | " + " | ".join(_cell(rates.get(p)) for p in protocols) + " |")
    lines.append("| **overall** | | | " + " | ".join(_cell(summary["overall"].get(p)) for p in protocols) + " |")
    return "\n".join(lines) + "\n"


def policy_label(cfg: EvaluateConfig) -> str:
    """The policy as the tables name it, with how its chunks were drawn when sampled."""
    if not cfg.sample:
        return cfg.policy
    correlated = f", steps correlated by {cfg.correlation:g}" if cfg.correlation else ""
    return f"{cfg.policy} (chunks sampled at temperature {cfg.temperature:g}{correlated})"


def evaluate(cfg: EvaluateConfig) -> dict:
    """Run every episode the config asks for; returns the summary (and writes the files)."""
    if cfg.reflector and not Path(cfg.reflector).is_dir():
        raise FileNotFoundError(f"reflector={cfg.reflector!r}: no such reflector folder")
    if cfg.sample and not Path(cfg.policy).is_dir():
        raise ValueError(f"sample=true draws from a checkpoint's Laplace law; policy={cfg.policy!r} is not a "
                         "checkpoint folder")
    training = init_states_used(cfg.training_datasets)
    init_states = choose_init_states(cfg, training)
    training = {key: training.get(key, []) for key in init_states}  # the evaluated tasks
    jobs = _jobs(cfg, init_states)
    records = []
    total = sum(len(j.init_state_ids) * len(j.protocols) for j in jobs)
    ctx = mp.get_context("spawn")  # simulators and torch do not survive fork well
    workers = min(cfg.workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    with tqdm(total=total, desc=f"evaluate {cfg.policy}", unit="episode") as bar, \
            ctx.Pool(workers, initializer=_init_worker, initargs=(threads,)) as pool:
        for job, instruction, recs in pool.imap_unordered(_run_job, jobs):
            for protocol, rec in recs:
                records.append({"suite": job.suite, "task_id": job.task_id, "protocol": protocol,
                                "instruction": instruction, **rec})
            bar.update(len(recs))
    records.sort(key=lambda r: (r["suite"], r["task_id"], r["protocol"], r["init_state_id"]))
    summary = summarise(records)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = lambda suite_task: f"{suite_task[0]}/{suite_task[1]}"  # noqa: E731
    (out / "eval.json").write_text(json.dumps({
        "config": cfg.to_dict(), "summary": summary,
        "init_states": {key(k): v for k, v in init_states.items()},
        "training_init_states": {key(k): v for k, v in training.items()},
        "episodes": records}, indent=1))
    (out / "eval.md").write_text(markdown_table(summary, policy_label(cfg), init_states, training))
    return summary


def run(cfg: EvaluateConfig) -> int:
    try:
        summary = evaluate(cfg)
    except (FileNotFoundError, ValueError) as err:
        print(f"world-env evaluate: {err}", file=sys.stderr)
        return 2
    print(markdown_table(summary, policy_label(cfg)))
    print(f"written: {Path(cfg.output_dir) / 'eval.json'}, {Path(cfg.output_dir) / 'eval.md'}")
    return 0
