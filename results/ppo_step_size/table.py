"""Print the arm table of results/ppo_step_size/README.md from the committed eval.json files:
real success under GT termination on drawn init states 50-99, and each arm's paired
difference from the shipped SFT policy.

    python results/ppo_step_size/table.py
"""

from __future__ import annotations

import json
from pathlib import Path

from world_env_training.eval import stats

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
SFT = RESULTS / "pipeline_default/eval_sft/eval.json"
ARMS = {"LOOP in imagination (physics arm), lr 1e-5, 8 updates": RESULTS / "pipeline_default/eval_loop/eval.json",
        "LOOP in imagination (physics arm), lr 2e-6, 16 updates": HERE / "loop_imagined/eval/eval.json",
        "LOOP in imagination (scene oracle), lr 1e-5, 8 updates": RESULTS / "oracle_scene/eval_loop/eval.json",
        "control arm, LOOP in LIBERO, lr 1e-5, 12 updates": RESULTS / "pipeline_default/eval_control/eval.json",
        "control arm, LOOP in LIBERO, lr 2e-6, 12 updates": HERE / "loop_libero/eval/eval.json",
        "control arm, LOOP in LIBERO, lr 2e-6, temperature 0.5, 12 updates": HERE / "loop_libero_t05/eval/eval.json"}


def outcomes(path: Path) -> dict:
    return stats.episode_outcomes(json.loads(path.read_text()), "gt_termination")


def main() -> None:
    sft = outcomes(SFT)
    print(f"SFT: {stats.rate_summary(sft)}")
    for name, path in ARMS.items():
        if not path.is_file():
            print(f"{name}: {path.relative_to(RESULTS)} missing")
            continue
        try:
            print(f"{name}: {stats.paired_summary(outcomes(path), sft)}")
        except ValueError as err:  # evaluated other init states than SFT's
            raise SystemExit(f"{path}: {err}") from None


if __name__ == "__main__":
    main()
