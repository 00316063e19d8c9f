"""How well the Instant Reflector judges success, and whether the policy could fool it.

Per frame (every frame o_t of every held-out episode, judged from o_0..o_t as online):
precision, recall, F1 and accuracy of done = R > eta against the success label, and AUROC of
R (threshold-free; rank statistic, ties counted half). Undefined values (no predicted or no
actual positives, one class only) are reported as None / "n/a", never as 0.

Per episode: the reflector's firing step is the first t with R > eta (where an RL episode
would be terminated). For successful episodes, the absolute error |fire - success_step| in
steps (mean over those that fire; the signed mean says early (<0) or late (>0)) and how many
never fire; for failed episodes, how many fire at all (a false termination with reward).

Reward-hacking audit (``audit_reward_hacking``): imagined rollouts (world-model frames, the
actions that produced them and the LIBERO init state they started from) carry the reflector's
verdict from imagination, or are scored by it here, and their actions are replayed open-loop in
real LIBERO from the same init state.
A false success is a rollout the reflector ends as a success (it fires) while the replay
never achieves the task. The replay is open loop: what counts is whether the actions the
policy chose in imagination achieve the task in the real simulator. Contact-rich outcomes are
sensitive to tiny differences, and a recorded real episode does not always replay to its own
labels (measured: 1 of 2 held-out expert demos, float32-stored actions, failed on replay), so
a stand-in audit on real frames mixes replay divergence into the false-success count.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


# --- metrics on plain arrays ----------------------------------------------------------------------


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def binary_metrics(scores, labels, threshold: float) -> dict:
    """Counts and precision/recall/F1/accuracy of ``scores > threshold`` against 0/1 ``labels``."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    pred = scores > threshold
    tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
    fn, tn = int((~pred & labels).sum()), int((~pred & ~labels).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else None)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1,
            "accuracy": _ratio(tp + tn, len(labels))}


def auroc(scores, labels) -> float | None:
    """Area under the ROC curve: P(score of a random positive > that of a random negative),
    ties counting half (Mann-Whitney U with average ranks). None if a class is missing."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average rank (1-based) over each run of tied scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def first_fire(rewards, threshold: float) -> int | None:
    """First index t with R_t > threshold, or None."""
    above = np.flatnonzero(np.asarray(rewards) > threshold)
    return int(above[0]) if len(above) else None


def chunk_end_fire(rewards, threshold: float, every: int) -> int | None:
    """First judged index t with R_t > threshold when only o_0 and every ``every``-th frame are
    judged (LOOP's ``reflector_every`` with chunks of ``every`` steps), or None."""
    judged = np.asarray(rewards)[::every]
    above = np.flatnonzero(judged > threshold)
    return int(above[0]) * every if len(above) else None


def episode_metrics(rewards: list, labels: list, threshold: float, chunk: int = 8) -> dict:
    """Firing-step statistics over episodes (each a per-frame R array and 0/1 label array),
    including where judging only at chunk ends (every ``chunk`` frames) would end each episode
    against judging every frame: ``chunk_end_within_one_chunk`` counts the episodes whose
    per-frame firing the chunk-end judge reproduces at most ``chunk - 1`` steps later."""
    errors, fired_failed, never_fired, n_success, n_failed, rows = [], 0, 0, 0, 0, []
    fired, within = 0, 0
    for r, y in zip(rewards, labels):
        y = np.asarray(y).astype(bool)
        fire = first_fire(r, threshold)
        chunked = chunk_end_fire(r, threshold, chunk)
        if fire is not None:
            fired += 1
            within += chunked is not None and chunked - fire < chunk
        true = int(np.argmax(y)) if y.any() else None
        rows.append({"success_step": true, "fire_step": fire, "chunk_end_fire_step": chunked, "length": len(y) - 1})
        if true is None:
            n_failed += 1
            fired_failed += fire is not None
        else:
            n_success += 1
            if fire is None:
                never_fired += 1
            else:
                errors.append(fire - true)
    errors = np.asarray(errors, dtype=np.float64)
    return {"episodes": len(rows), "successful": n_success, "failed": n_failed,
            "step_mae": float(np.abs(errors).mean()) if len(errors) else None,
            "step_mean_error": float(errors.mean()) if len(errors) else None,
            "never_fired_on_success": never_fired, "never_fired_on_success_rate": _ratio(never_fired, n_success),
            "fired_on_failed": fired_failed, "fired_on_failed_rate": _ratio(fired_failed, n_failed),
            "chunk": chunk, "fired": fired, "chunk_end_within_one_chunk": within,
            "per_episode": rows}


def evaluate_scores(rewards: list, labels: list, threshold: float, chunk: int = 8) -> dict:
    """The whole report from per-episode R and label arrays."""
    flat_r, flat_y = np.concatenate(rewards), np.concatenate(labels)
    frames = binary_metrics(flat_r, flat_y, threshold)
    frames.update(auroc=auroc(flat_r, flat_y), frames=len(flat_y), positives=int(np.asarray(flat_y).sum()))
    return {"threshold": threshold, "frames": frames, "episodes": episode_metrics(rewards, labels, threshold, chunk)}


# --- the model on recorded episodes ---------------------------------------------------------------

def evaluate_reflector(model, episodes, threshold: float | None = None, features: list | None = None,
                       chunk: int = 8) -> dict:
    """Score every frame of ``episodes`` (``Episode`` objects, or dicts with frames, success,
    instruction and optional key/source) and report (chunk-end judging every ``chunk`` frames
    included). ``features``: their ``encode_frames`` outputs, when already at hand."""
    threshold = model.threshold if threshold is None else threshold
    rewards, labels = [], []
    for i, ep in enumerate(episodes):
        get = ep.get if isinstance(ep, dict) else lambda k, e=ep: getattr(e, k)
        feats = features[i] if features is not None else None
        rewards.append(model.score_episode(get("frames"), get("instruction"), features=feats))
        labels.append(np.asarray(get("success")))
    report = evaluate_scores(rewards, labels, threshold, chunk)
    for row, ep in zip(report["episodes"]["per_episode"], episodes):
        get = ep.get if isinstance(ep, dict) else lambda k, e=ep: getattr(e, k, None)
        row.update(source=get("source"), key=get("key"))
    return report


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_markdown(report: dict, title: str = "Instant Reflector: held-out evaluation") -> str:
    f, e = report["frames"], report["episodes"]
    lines = [f"## {title}", "",
             f"eta = {report['threshold']}; {f['frames']} frames ({f['positives']} labelled success) in "
             f"{e['episodes']} episodes ({e['successful']} successful, {e['failed']} failed).", "",
             "| per frame | value |", "|---|---|"]
    lines += [f"| {name} | {_fmt(f[name])} |" for name in ("precision", "recall", "f1", "accuracy", "auroc")]
    lines += [f"| TP / FP / FN / TN | {f['tp']} / {f['fp']} / {f['fn']} / {f['tn']} |", "",
              "| per episode | value |", "|---|---|",
              f"| first-fire step MAE vs true success step (successful, fired) | {_fmt(e['step_mae'], 1)} |",
              f"| mean signed error (negative = early) | {_fmt(e['step_mean_error'], 1)} |",
              f"| successful episodes where it never fires | {e['never_fired_on_success']} / {e['successful']} |",
              f"| failed episodes where it fires | {e['fired_on_failed']} / {e['failed']} |",
              f"| judging only every {e['chunk']} frames (chunk ends) ends the episode within one chunk of "
              f"per-frame judging | {e['chunk_end_within_one_chunk']} / {e['fired']} |", "",
              "| episode | source | length | success step | fire step | chunk-end fire step |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r.get('key') or i} | {r.get('source') or ''} | {r['length']} | {_fmt(r['success_step'])} | "
              f"{_fmt(r['fire_step'])} | {_fmt(r['chunk_end_fire_step'])} |" for i, r in enumerate(e["per_episode"])]
    return "\n".join(lines) + "\n"


def write_report(report: dict, folder: str | Path, name: str = "eval", markdown: str | None = None) -> Path:
    """Write ``NAME.json`` and ``NAME.md`` into ``folder`` (each replaced atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    markdown = format_markdown(report) if markdown is None else markdown
    for suffix, text in ((".json", json.dumps(report, indent=1)), (".md", markdown)):
        path = folder / f"{name}{suffix}"
        tmp = folder / f".{path.name}.tmp"
        tmp.write_text(text)
        tmp.replace(path)
    return folder / f"{name}.md"


# --- reward-hacking audit --------------------------------------------------------------------------

@dataclass
class ImaginedRollout:
    """One world-model rollout: imagined frames o_0..o_T (T+1, H, W, 3) uint8, the T actions
    (T, 7) that produced them (LIBERO units, as executed), and the LIBERO task and init state
    it started from.

    ``judged``: the reflector's verdict as imagination gave it, (rewards at the judged frames,
    the frame it fired at or None), when the rollout was scored while it ran (LOOP's cadence,
    ``reflector_every``); None: the audit scores every frame itself."""

    frames: np.ndarray
    actions: np.ndarray
    suite: str
    task_id: int
    init_state_id: int
    instruction: str
    judged: tuple[np.ndarray, int | None] | None = None

    def __post_init__(self):
        self.frames, self.actions = np.asarray(self.frames), np.asarray(self.actions, dtype=np.float64)
        if self.frames.ndim != 4 or self.frames.dtype != np.uint8 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames: {self.frames.dtype} {self.frames.shape}, expected uint8 (T+1, H, W, 3)")
        if self.actions.shape != (len(self.frames) - 1, 7):
            raise ValueError(f"actions: shape {self.actions.shape}, expected ({len(self.frames) - 1}, 7)")
        if self.judged is not None:
            rewards, fired = self.judged
            if not len(rewards) or (fired is not None and not 0 <= fired < len(self.frames)):
                raise ValueError(f"judged: {len(rewards)} rewards, fired at {fired}; expected at least one reward "
                                 f"and a frame index below {len(self.frames)} or None")

    @classmethod
    def from_episode(cls, episode) -> "ImaginedRollout":
        return cls(episode.frames, episode.actions, episode.suite, episode.task_id, episode.init_state_id,
                   episode.instruction)


def _libero_env(suite: str, task_id: int, resolution: int, seed: int):
    from world_env_libero.env import LiberoEnv

    return LiberoEnv(suite, task_id, resolution=resolution, seed=seed)


def replay_success(env, rollout: ImaginedRollout, settle_steps: int = 10) -> np.ndarray:
    """Replay the rollout's actions in ``env`` from its init state: (T+1,) uint8 labels with the
    dataset's convention (1 from the first step after which the task holds; label 0 for o_0)."""
    env.reset(rollout.init_state_id, settle_steps=settle_steps)
    labels = np.zeros(len(rollout.frames), dtype=np.uint8)
    for t, action in enumerate(rollout.actions):
        _, success = env.step(action, render=False)  # images are not needed: skip the ~60 ms render
        if success:
            labels[t + 1:] = 1
            break
    return labels


def audit_reward_hacking(model, rollouts: list[ImaginedRollout], threshold: float | None = None, env_seed: int = 0,
                         settle_steps: int = 10, make_env=_libero_env) -> dict:
    """False-success rate of the reflector on imagined rollouts, checked in real LIBERO. A
    rollout's claim is the verdict it carries (``judged``), else the first of its frames the
    reflector scores above ``threshold``.

    ``env_seed`` and ``settle_steps`` must be those the rollouts' initial frames were made with
    (the collectors use seed 0 and 10). ``make_env(suite, task_id, resolution, seed)`` builds the
    simulator (LiberoEnv by default; one per task, reused across its rollouts).

    Returns ``rollouts``, ``claimed`` (the reflector fires), ``real_successes``,
    ``false_successes`` (claimed, never achieved in the replay), ``false_success_rate``
    (false / claimed: how far a claimed success can be trusted), ``false_success_rate_all``
    (false / rollouts), ``missed`` (achieved, never claimed), ``premature`` (claimed before the
    replay achieved it) and a row per rollout.
    """
    threshold = model.threshold if threshold is None else threshold
    envs, rows = {}, []
    try:
        for i, rollout in enumerate(rollouts):
            key = (rollout.suite, rollout.task_id, rollout.frames.shape[1])
            if key not in envs:
                envs[key] = make_env(rollout.suite, rollout.task_id, rollout.frames.shape[1], env_seed)
            real = replay_success(envs[key], rollout, settle_steps)
            if rollout.judged is None:
                rewards = model.score_episode(rollout.frames, rollout.instruction)
                claim = first_fire(rewards, threshold)
            else:
                rewards, claim = rollout.judged
            real_step = int(np.argmax(real)) if real.any() else None
            rows.append({"rollout": i, "suite": rollout.suite, "task_id": rollout.task_id,
                         "init_state_id": rollout.init_state_id, "length": len(rollout.actions),
                         "claimed_step": claim, "real_success_step": real_step, "max_reward": float(rewards.max()),
                         "false_success": claim is not None and real_step is None,
                         "premature": claim is not None and real_step is not None and claim < real_step})
    finally:
        for env in envs.values():
            close = getattr(env, "close", None)
            if close is not None:
                close()
    claimed = sum(r["claimed_step"] is not None for r in rows)
    false = sum(r["false_success"] for r in rows)
    real_ok = sum(r["real_success_step"] is not None for r in rows)
    missed = sum(r["real_success_step"] is not None and r["claimed_step"] is None for r in rows)
    return {"threshold": threshold, "rollouts": len(rows), "claimed": claimed, "real_successes": real_ok,
            "false_successes": false, "false_success_rate": _ratio(false, claimed),
            "false_success_rate_all": _ratio(false, len(rows)), "missed": missed,
            "premature": sum(r["premature"] for r in rows), "per_rollout": rows}


def format_audit(audit: dict) -> str:
    from world_env_training.eval.stats import wilson_interval

    n, claimed, real = audit["rollouts"], audit["claimed"], audit["real_successes"]
    both = claimed - audit["false_successes"]
    rate = audit["false_success_rate"]
    interval = ""
    if claimed:
        low, high = wilson_interval(audit["false_successes"], claimed)
        interval = f" [{low:.3f}, {high:.3f}] (95% Wilson, {claimed} claims)"
    lines = ["## Reward-hacking audit (imagined rollouts replayed in LIBERO)", "",
             f"eta = {audit['threshold']}; {n} rollouts, reflector claims success on "
             f"{claimed}, LIBERO achieves {real}.", "",
             "| | LIBERO: success | LIBERO: failure |", "|---|---|---|",
             f"| reflector claims success | {both} | {audit['false_successes']} |",
             f"| reflector does not | {real - both} | {n - claimed - (real - both)} |", "",
             "| figure | value |", "|---|---|",
             f"| false successes (claimed, not achieved) | {audit['false_successes']} |",
             f"| false-success rate (of claimed) | {_fmt(rate)}{interval} |",
             f"| false-success rate (of all rollouts) | {_fmt(audit['false_success_rate_all'])} |",
             f"| premature claims (before LIBERO achieved it) | {audit['premature']} |",
             f"| missed successes (achieved, never claimed) | {audit['missed']} |"]
    real_rate = audit.get("real_eval")
    if real_rate is not None:
        low, high = wilson_interval(audit["imagined_fired"], n)
        lines += ["", "Imagined against real success from the same held-out init states "
                  f"({', '.join(map(str, audit['init_states']))}):", "",
                  "| | success | 95% interval | episodes |", "|---|---|---|---|",
                  f"| imagined (reflector fired in imagination) | {audit['imagined_fired'] / n:.3f} | "
                  f"[{low:.3f}, {high:.3f}] | {n} |",
                  f"| real (evaluate, GT termination) | {real_rate['rate']:.3f} | "
                  f"[{real_rate['ci95'][0]:.3f}, {real_rate['ci95'][1]:.3f}] | {real_rate['episodes']} |"]
    return "\n".join(lines) + "\n"


# --- world-env evaluate-reflector -----------------------------------------------------------------

def _scene(key: str) -> tuple:
    """(suite, task, init state) of an episode key ``source/suite/task/init[/seed]``."""
    return tuple(key.split("/")[1:4])


def run_evaluate(cfg) -> int:
    """``world-env evaluate-reflector``: score the episodes of ``cfg.datasets`` whose initial
    scene (suite, task, init state) no training episode of the reflector's run started from, and
    write ``eval.json`` / ``eval.md`` (the held-out report, chunk-end judging included)."""
    import sys

    from world_env_training.data.dataset import Dataset, DatasetError
    from world_env_training.models.backbones import resolve_device
    from world_env_training.models.reflector import Reflector

    try:
        model = Reflector.from_pretrained(cfg.reflector, resolve_device(cfg.device))
        split_file = Path(cfg.reflector) / "split.json"
        trained = json.loads(split_file.read_text())["train"] if split_file.is_file() else []
        seen = {_scene(key) for key in trained}
        episodes, keys, left_out = [], [], 0
        for folder in cfg.datasets:
            dataset = Dataset(folder)
            for i in range(len(dataset)):
                entry = dataset.entry(i)
                if (entry["suite"], str(entry["task_id"]), str(entry["init_state_id"])) in seen:
                    left_out += 1
                    continue
                episodes.append(dataset[i])
                keys.append(f"{folder}:{entry['key']}")
        if not episodes:
            raise ValueError(f"datasets {cfg.datasets}: every episode starts where a training episode of "
                             f"{cfg.reflector} started")
    except (FileNotFoundError, ValueError, DatasetError) as err:
        print(f"world-env evaluate-reflector: {err}", file=sys.stderr)
        return 2
    report = evaluate_reflector(model, episodes, chunk=cfg.chunk)
    for row, key in zip(report["episodes"]["per_episode"], keys):
        row["key"] = key
    report.update(reflector=str(cfg.reflector), datasets=list(cfg.datasets), left_out_seen_scenes=left_out,
                  training_scenes=sorted("/".join(s) for s in seen))
    write_report(report, cfg.output_dir)
    e = report["episodes"]
    print(f"evaluate-reflector: {e['episodes']} episodes ({e['successful']} successful; {left_out} left out, "
          f"their scenes were trained on); judging every {e['chunk']} frames ends {e['chunk_end_within_one_chunk']} "
          f"of the {e['fired']} episodes it fires on within one chunk of per-frame judging; "
          f"{Path(cfg.output_dir) / 'eval.md'}")
    return 0
