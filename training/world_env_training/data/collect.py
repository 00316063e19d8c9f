"""``world-env collect-demos`` and ``world-env explore``: episodes from real LIBERO.

Both spread tasks over worker processes (one simulator each), append every episode to a
dataset (``dataset.py``) as soon as it arrives, and resume: an episode whose key is in the
dataset already is not collected again, so a killed run picks up where it stopped.

collect-demos keeps exactly ``demos_per_task`` successful expert episodes per task, trying
its ``init_state_ids`` in order (by default LIBERO's saved ones, 0, 1, 2, ...) and skipping
those where the expert fails.
explore runs a policy with Laplace noise and keeps every episode, success or failure.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from world_env_training.configs import TASKS_PER_SUITE, CollectDemosConfig, ExploreConfig
from world_env_training.data.dataset import DatasetWriter
from world_env_training.policies import make_policy
from world_env_training.data.rollout import LaplaceExploration, episode_seed, record_episode

SOURCE_DEMO, SOURCE_EXPLORE = "expert", "exploration"


@dataclass(frozen=True)
class TaskJob:
    suite: str
    task_id: int
    resolution: int
    seed: int
    device: str
    wanted: int  # episodes still to collect for this task
    skip: frozenset  # episode indices already in the dataset
    policy: str = "expert"
    noise_scale: float = 0.0
    post_success_steps: int = 0
    init_states: tuple = ()  # the init states tried (demos) or cycled through (exploration); empty: saved ones
    max_steps: int = 0  # exploration: steps per episode at most (0: the suite's limit)


def _demo_worker(job: TaskJob, queue) -> None:
    """Try init states in order until ``job.wanted`` expert successes; stream them to ``queue``."""
    from world_env_libero.env import LiberoEnv

    found = 0
    with LiberoEnv(job.suite, job.task_id, resolution=job.resolution, seed=job.seed) as env:
        for init_id in job.init_states or range(env.num_init_states):
            if found == job.wanted:
                break
            if init_id in job.skip:
                continue
            ep_seed = episode_seed(job.seed, job.suite, job.task_id, init_id)
            policy = make_policy("expert", seed=ep_seed, device=job.device)
            episode = record_episode(env, policy, init_id, source=SOURCE_DEMO, seed=ep_seed,
                                     post_success_steps=job.post_success_steps)
            if episode.succeeded:
                queue.put(("episode", job, (f"{SOURCE_DEMO}/{job.suite}/{job.task_id}/{init_id}", episode)))
                found += 1
            else:
                queue.put(("failure", job, init_id))
    queue.put(("done", job, found))


def _explore_worker(job: TaskJob, queue) -> None:
    """Run ``job.wanted`` noisy episodes (indices not in ``job.skip``); stream each to ``queue``."""
    import numpy as np
    from world_env_libero.env import LiberoEnv

    with LiberoEnv(job.suite, job.task_id, resolution=job.resolution, seed=job.seed) as env:
        for index in range(job.wanted + len(job.skip)):
            if index in job.skip:
                continue
            ep_seed = episode_seed(job.seed, job.suite, job.task_id, index)
            base = make_policy(job.policy, seed=ep_seed, device=job.device)
            policy = LaplaceExploration(base, job.noise_scale, np.random.default_rng(ep_seed))
            states = job.init_states or range(env.num_init_states)
            episode = record_episode(env, policy, states[index % len(states)], source=SOURCE_EXPLORE,
                                     seed=ep_seed, post_success_steps=job.post_success_steps,
                                     max_steps=job.max_steps)
            queue.put(("episode", job, (f"{SOURCE_EXPLORE}/{job.suite}/{job.task_id}/{index}", episode)))
    queue.put(("done", job, job.wanted))


def _worker(args) -> None:
    kind, job, queue = args
    try:
        (_demo_worker if kind == "demos" else _explore_worker)(job, queue)
    except Exception as err:  # noqa: BLE001 - reported to the parent with the task named
        import traceback

        queue.put(("error", job, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


def _run(kind: str, jobs: list[TaskJob], writer: DatasetWriter, workers: int, desc: str) -> dict:
    """Run task jobs in worker processes, appending episodes as they stream in."""
    stats = {(j.suite, j.task_id): {"wanted": j.wanted, "kept": 0, "failed_init_states": []} for j in jobs}
    if not jobs:
        return stats
    ctx = mp.get_context("spawn")  # simulators and torch do not survive fork well
    with ctx.Manager() as manager, ctx.Pool(min(workers, len(jobs))) as pool:
        queue = manager.Queue()
        pending = pool.map_async(_worker, [(kind, job, queue) for job in jobs])
        remaining = len(jobs)
        with tqdm(total=sum(j.wanted for j in jobs), desc=desc, unit="episode") as bar:
            while remaining:
                what, job, payload = queue.get()
                entry = stats[(job.suite, job.task_id)]
                if what == "episode":
                    key, episode = payload
                    writer.append(episode, key=key)
                    entry["kept"] += 1
                    bar.update(1)
                elif what == "failure":
                    entry["failed_init_states"].append(payload)
                    bar.set_postfix(failures=sum(len(s["failed_init_states"]) for s in stats.values()))
                elif what == "done":
                    remaining -= 1
                else:
                    raise RuntimeError(f"{job.suite} task {job.task_id}: worker failed: {payload}")
        pending.get()
    return stats


def _existing(writer: DatasetWriter, source: str, suite: str, task_id: int) -> list[int]:
    """Episode indices present: keys are source/suite/task/index, where the index is the init
    state id for demos and the episode number for exploration."""
    prefix = f"{source}/{suite}/{task_id}/"
    return [int(k.split("/")[3]) for k in writer.keys() if k.startswith(prefix)]


def collect_demos(cfg: CollectDemosConfig) -> dict:
    writer = DatasetWriter(cfg.output_dir, info={"stage": "collect-demos", "config": cfg.to_dict()})
    jobs = []
    for suite in cfg.suites:
        for task in cfg.task_ids or range(TASKS_PER_SUITE):
            have = _existing(writer, SOURCE_DEMO, suite, task)
            if len(have) < cfg.demos_per_task:
                jobs.append(TaskJob(suite, task, cfg.resolution, cfg.seed, cfg.device,
                                    cfg.demos_per_task - len(have), frozenset(have),
                                    post_success_steps=cfg.post_success_steps,
                                    init_states=tuple(cfg.init_state_ids)))
    with writer:
        stats = _run("demos", jobs, writer, cfg.workers, "collect-demos")
    short = {f"{s}/{t}": v for (s, t), v in stats.items() if v["kept"] < v["wanted"]}
    return {"dataset": cfg.output_dir, "collected_now": stats, "short": short}


def explore(cfg: ExploreConfig) -> dict:
    make_policy(cfg.policy)  # fail early on a bad policy name or folder, before any simulator starts
    writer = DatasetWriter(cfg.output_dir, info={"stage": "explore", "config": cfg.to_dict()})
    jobs = []
    for suite in cfg.suites:
        for task in cfg.task_ids or range(TASKS_PER_SUITE):
            have = _existing(writer, SOURCE_EXPLORE, suite, task)
            if len(have) < cfg.episodes_per_task:
                jobs.append(TaskJob(suite, task, cfg.resolution, cfg.seed, cfg.device,
                                    cfg.episodes_per_task - len(have), frozenset(have), policy=cfg.policy,
                                    noise_scale=cfg.noise_scale, post_success_steps=cfg.post_success_steps,
                                    init_states=tuple(cfg.init_state_ids), max_steps=cfg.max_steps))
    with writer:
        stats = _run("explore", jobs, writer, cfg.workers, "explore")
    return {"dataset": cfg.output_dir, "collected_now": stats}


def run_collect_demos(cfg: CollectDemosConfig) -> int:
    result = collect_demos(cfg)
    for (suite, task), entry in result["collected_now"].items():
        failed = entry["failed_init_states"]
        print(f"{suite} task {task}: kept {entry['kept']} demos"
              + (f", expert failed on init states {failed}" if failed else ""))
    if result["short"]:
        print("world-env collect-demos: fewer demos than asked for (the expert failed on every init state "
              f"tried): {json.dumps(result['short'])}", file=sys.stderr)
        return 1
    print(f"dataset: {Path(cfg.output_dir).resolve()}")
    return 0


def run_explore(cfg: ExploreConfig) -> int:
    try:
        result = explore(cfg)
    except (FileNotFoundError, ValueError) as err:
        print(f"world-env explore: {err}", file=sys.stderr)
        return 2
    for (suite, task), entry in result["collected_now"].items():
        print(f"{suite} task {task}: {entry['kept']} exploration episodes")
    print(f"dataset: {Path(cfg.output_dir).resolve()}")
    return 0
