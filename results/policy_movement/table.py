"""Print the tables of results/policy_movement/README.md from the committed files: the control
arm after 42 and 60 updates, the control arm at temperature 0.25 (2 x 8 and 3 x 8 rollouts),
and the SFT policy drawing its chunks (evaluate --sample true, independent or correlated
steps), each paired against the SFT policy's means on the same drawn init states 50-99 (GT
termination); where the drawn chunks succeed (states the means solve, states they fail); and the
control arms' rollout success per 12 updates (15 for the 30-update run) from metrics.jsonl,
with its standard error over the block's updates.

    python results/policy_movement/table.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from world_env_training.eval import stats

HERE = Path(__file__).resolve().parent
# Policies trained from other demonstrations: not exploration around this SFT policy's replay.
OTHER_START = HERE.parent / "varied_demos"
SFT = HERE.parent / "pipeline_default/eval_sft/eval.json"
RUN = HERE / "loop_libero_60"
ARMS = [("control arm, 45 scene starts, after update 24 (../more_starts)",
         HERE.parent / "more_starts/loop_libero_24/eval/eval.json"),
        ("control arm, after update 42", RUN / "eval_update42/eval.json"),
        ("control arm, after update 60", RUN / "eval/eval.json"),
        ("control arm at temperature 0.25, after update 12", HERE / "loop_libero_t025/eval_update12/eval.json"),
        ("control arm at temperature 0.25, after update 24", HERE / "loop_libero_t025/eval/eval.json"),
        ("control arm at temperature 0.25, 3 x 8 rollouts of up to 128 steps, after update 15",
         HERE / "loop_libero_t025_b3/eval_update15/eval.json"),
        ("control arm at temperature 0.25, 3 x 8 rollouts of up to 128 steps, after update 30",
         HERE / "loop_libero_t025_b3/eval/eval.json"),
        ("SFT drawing its chunks (temperature 1), seed 0", HERE / "sft_sampled/seed0/eval.json"),
        ("SFT drawing its chunks (temperature 1), seed 1", HERE / "sft_sampled/seed1/eval.json"),
        ("SFT drawing its chunks (temperature 0.5), seed 0", HERE / "sft_sampled/t0.5/eval.json"),
        ("SFT drawing its chunks (temperature 0.25), seed 0", HERE / "sft_sampled/t0.25/eval.json"),
        ("SFT drawing its chunks (temperature 0.25), seed 1", HERE / "sft_sampled/t0.25_seed1/eval.json"),
        ("SFT drawing its chunks, steps correlated by 0.9 (temperature 1)", HERE / "sft_sampled/rho0.9_t1/eval.json"),
        ("SFT drawing its chunks, steps correlated by 0.9 (temperature 0.25)",
         HERE / "sft_sampled/rho0.9_t0.25/eval.json")]


def flips(sft: dict) -> None:
    """Which held-out states change outcome against SFT's means, per arm; and, over every
    evaluation under results/ on the same states (but ../varied_demos, whose policies learnt
    from other demonstrations), which of the states the means fail were ever solved (by any
    policy, sampled or not)."""
    print("\nstates each arm loses / gains against SFT's means (init state ids)")
    for name, path in ARMS:
        if path.is_file():
            gained, lost = stats.flipped(stats.file_outcomes(path), sft)
            print(f"  {name}: lost {lost}, gained {gained}")
    evaluations = stats.outcomes_under(HERE.parent, sft, exclude=[OTHER_START])
    solved_by = stats.solved_elsewhere(evaluations, sft)
    failed = sum(not won for won in sft.values())
    print(f"\nof the {failed} states SFT's means fail, ever solved by one of the {len(evaluations)} "
          "evaluations of these states under results/ (state: evaluations): "
          + ", ".join(f"{k[2]}: {len(v)}" for k, v in sorted(solved_by.items())))


def main() -> None:
    sft = stats.file_outcomes(SFT)
    print(f"SFT (means): {stats.rate_summary(sft)}")
    for name, path in ARMS:
        print(stats.arm_line(name, path, sft, HERE.parent))
    print("\nwhere drawn chunks succeed: on the states SFT's means solve / on those they fail")
    solved = [key for key, won in sft.items() if won]
    for name, path in ARMS:
        if "drawing" in name and path.is_file():
            drawn = stats.file_outcomes(path)
            print(f"  {name}: {sum(drawn[k] for k in solved)}/{len(solved)} / "
                  f"{sum(drawn[k] for k in sft if k not in solved)}/{len(sft) - len(solved)}")
    flips(sft)
    for run in (RUN, HERE / "loop_libero_t025", HERE / "loop_libero_t025_b3"):
        if not (run / "metrics.jsonl").is_file():
            continue
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        size = 15 if len(lines) == 30 else 12
        print(f"\n{run.name} rollouts (LIBERO success of sampled chunks), per {size} updates:")
        for first in range(1, len(lines) + 1, size):
            block = [r for r in lines if first <= r["update"] < first + size]
            won = round(sum(r["return_mean"] * r["episodes"] for r in block))
            episodes = sum(r["episodes"] for r in block)
            idle = sum(not r["stepped"] for r in block)
            # Each update draws its own 2 scenes, whose difficulty dominates its success: the
            # block's uncertainty is the spread over its updates, not a binomial of its episodes.
            rates = np.array([r["return_mean"] for r in block])
            spread = rates.std(ddof=1) / np.sqrt(len(rates)) if len(rates) > 1 else float("nan")
            print(f"  updates {first}-{first + len(block) - 1}: {won}/{episodes} "
                  f"({100 * won / episodes:.0f} % +- {100 * spread:.0f}, standard error over its updates), "
                  f"{idle} updates without a PPO step (no signal)")


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # an arm evaluated other init states than SFT's
        raise SystemExit(str(err)) from None
