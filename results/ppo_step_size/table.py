"""Print the arm table of results/ppo_step_size/README.md from the committed eval.json files:
real success under GT termination on drawn init states 50-99, and each arm's paired
difference from the shipped SFT policy.

    python results/ppo_step_size/table.py
"""

from __future__ import annotations

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


def main() -> None:
    sft = stats.file_outcomes(SFT)
    print(f"SFT: {stats.rate_summary(sft)}")
    for name, path in ARMS.items():
        print(stats.arm_line(name, path, sft, RESULTS))


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # an arm evaluated other init states than SFT's
        raise SystemExit(str(err)) from None
