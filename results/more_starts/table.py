"""Print the table of results/more_starts/README.md from the committed files: each LOOP arm
from 45 start states beside the same run from the 5 demonstrations' (results/ppo_step_size),
real success under GT termination on drawn init states 50-99 paired against the shipped SFT
policy, and the rollouts' success or return per update from metrics.jsonl.

    python results/more_starts/table.py
"""

from __future__ import annotations

import json
from pathlib import Path

from world_env_training.eval import stats

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
SFT = RESULTS / "pipeline_default/eval_sft/eval.json"
STEP = RESULTS / "ppo_step_size"
# (arm, run folder, evaluation folder in it): the run folder holds metrics.jsonl.
ARMS = [("LOOP in imagination (physics arm), 16 updates, 5 demo starts", STEP / "loop_imagined", "eval"),
        ("LOOP in imagination (physics arm), 16 updates, 45 scene starts", HERE / "loop_imagined", "eval"),
        ("control arm (LOOP in LIBERO), temperature 0.5, 12 updates, 5 demo starts", STEP / "loop_libero_t05", "eval"),
        ("control arm (LOOP in LIBERO), temperature 0.5, 12 updates, 45 scene starts", HERE / "loop_libero_t05",
         "eval"),
        ("control arm (LOOP in LIBERO), 12 updates, 5 demo starts", STEP / "loop_libero", "eval"),
        ("control arm (LOOP in LIBERO), 45 scene starts, after update 12", HERE / "loop_libero_24", "eval_update12"),
        ("control arm (LOOP in LIBERO), 45 scene starts, after update 24", HERE / "loop_libero_24", "eval")]


def outcomes(path: Path) -> dict:
    return stats.episode_outcomes(json.loads(path.read_text()), "gt_termination")


def returns(folder: Path) -> str:
    """Mean rollout return per update (LIBERO: the share of rollouts that succeeded)."""
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return " ".join(f"{json.loads(line)['return_mean']:.2f}" for line in lines if line.strip())


def main() -> None:
    sft = outcomes(SFT)
    print(f"SFT: {stats.rate_summary(sft)}")
    for name, folder, evaluation in ARMS:
        path = folder / evaluation / "eval.json"
        if not path.is_file():
            print(f"{name}: {path.relative_to(RESULTS)} missing")
            continue
        try:
            print(f"{name}: {stats.paired_summary(outcomes(path), sft)}")
        except ValueError as err:  # evaluated other init states than SFT's
            raise SystemExit(f"{path}: {err}") from None
        if evaluation == "eval":
            print(f"    rollout return per update: {returns(folder)}")


if __name__ == "__main__":
    main()
