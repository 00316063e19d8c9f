"""Paired comparison of each arm with SFT on their shared held-out init states (README,
"Grounding imagination"): SFT successes kept and lost, new successes, the 95 % interval of the
difference paired by init state (``world_env_training.eval.stats.paired_newcombe_interval``, as
the pipeline's report gives it) and the exact two-sided McNemar p-value of the discordant pairs.

    python results/grounding/paired.py

Three sets: the 40 init states of the runs' own evaluations; all 45 held-out saved states of the
task, every arm evaluated again under GT termination (``heldout45/<arm>/eval.json``); and 150
drawn init states (ids 50-199, ``evaluate --init_state_source drawn``) for SFT, the arm-physics
run and the control arm (``drawn150/<arm>/eval.json``).
"""

import json
from math import comb
from pathlib import Path

from world_env_training.eval.stats import paired_newcombe_interval, paired_table

HERE = Path(__file__).parent
NAMES = {"gains017": "LOOP in imagination, gains 0.17", "gains024": "LOOP in imagination, gains 0.24",
         "physics": "LOOP in imagination, arm physics", "libero12": "LOOP in LIBERO (control arm), 12 updates",
         "libero24": "LOOP in LIBERO (control arm), 24 updates"}
SETS = {
    "40 held-out init states (each run's own evaluation)": (
        HERE.parent / "loop_arm8" / "sft" / "eval.json",
        {"gains017": HERE.parent / "loop_arm8" / "loop_imagined" / "eval.json",
         "gains024": HERE / "loop_gains024" / "eval.json", "physics": HERE / "loop_physics" / "eval.json",
         "libero12": HERE / "loop_libero" / "eval.json", "libero24": HERE / "loop_libero_24" / "eval.json"}),
    "all 45 held-out init states (heldout45/)": (
        HERE / "heldout45" / "sft" / "eval.json", {name: HERE / "heldout45" / name / "eval.json" for name in NAMES}),
    "150 drawn init states (drawn150/)": (
        HERE / "drawn150" / "sft" / "eval.json",
        {name: HERE / "drawn150" / name / "eval.json" for name in ("physics", "libero12")}),
}


def outcomes(path: Path) -> dict[int, bool]:
    return {e["init_state_id"]: bool(e["success"]) for e in json.loads(path.read_text())["episodes"]}


def mcnemar_exact(b: int, c: int) -> float:
    n = b + c
    return 1.0 if n == 0 else min(1.0, 2 * sum(comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


for title, (sft_path, arms) in SETS.items():
    sft = outcomes(sft_path)
    print(f"{title}: SFT {sum(sft.values())}/{len(sft)}")
    for key, path in arms.items():
        arm = outcomes(path)
        if set(arm) != set(sft):
            raise SystemExit(f"{path}: evaluated other init states than {sft_path}")
        kept, new, lost, neither = paired_table(arm, sft)
        d, low, high = paired_newcombe_interval(kept, new, lost, neither)
        print(f"  {NAMES[key]}: {sum(arm.values())}/{len(arm)}; of SFT's {sum(sft.values())} successes kept {kept}, "
              f"lost {lost}; new {new}; difference {100 * d:+.1f} points, paired 95 % interval "
              f"[{100 * low:+.1f}, {100 * high:+.1f}]; McNemar exact p {mcnemar_exact(new, lost):.3f}")
