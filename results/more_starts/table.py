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


def returns(folder: Path) -> str:
    """Mean rollout return per update (LIBERO: the share of rollouts that succeeded)."""
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return " ".join(f"{json.loads(line)['return_mean']:.2f}" for line in lines if line.strip())


def main() -> None:
    sft = stats.file_outcomes(SFT)
    print(f"SFT: {stats.rate_summary(sft)}")
    for name, folder, evaluation in ARMS:
        path = folder / evaluation / "eval.json"
        print(stats.arm_line(name, path, sft, RESULTS))
        if evaluation == "eval" and path.is_file():
            print(f"    rollout return per update: {returns(folder)}")


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # an arm evaluated other init states than SFT's
        raise SystemExit(str(err)) from None
