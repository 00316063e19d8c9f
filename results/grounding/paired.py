"""Paired comparison of each arm with SFT on their shared held-out init states (README,
"Grounding imagination"): SFT successes kept and lost, new successes, the 95 % interval of the
difference paired by init state (``world_env_training.eval.stats.paired_newcombe_interval``, as
the pipeline's report gives it) and the exact two-sided McNemar p-value of the discordant pairs.

    python results/grounding/paired.py
"""

import json
from math import comb
from pathlib import Path

from world_env_training.eval.stats import paired_newcombe_interval, paired_table

HERE = Path(__file__).parent
SFT = HERE.parent / "loop_arm8" / "sft" / "eval.json"
ARMS = {"LOOP in imagination, gains 0.17": HERE.parent / "loop_arm8" / "loop_imagined" / "eval.json",
        "LOOP in imagination, gains 0.24": HERE / "loop_gains024" / "eval.json",
        "LOOP in imagination, arm physics": HERE / "loop_physics" / "eval.json",
        "LOOP in LIBERO (control arm), 12 updates": HERE / "loop_libero" / "eval.json",
        "LOOP in LIBERO (control arm), 24 updates": HERE / "loop_libero_24" / "eval.json"}


def outcomes(path: Path) -> dict[int, bool]:
    return {e["init_state_id"]: bool(e["success"]) for e in json.loads(path.read_text())["episodes"]}


def mcnemar_exact(b: int, c: int) -> float:
    n = b + c
    return 1.0 if n == 0 else min(1.0, 2 * sum(comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


sft = outcomes(SFT)
for name, path in ARMS.items():
    arm = outcomes(path)
    if set(arm) != set(sft):
        raise SystemExit(f"{path}: evaluated other init states than {SFT}")
    kept, new, lost, neither = paired_table(arm, sft)
    d, low, high = paired_newcombe_interval(kept, new, lost, neither)
    print(f"{name}: {sum(arm.values())}/{len(arm)}; of SFT's {sum(sft.values())} successes kept {kept}, lost {lost}; "
          f"new {new}; difference {100 * d:+.1f} points, paired 95 % interval [{100 * low:+.1f}, {100 * high:+.1f}]; "
          f"McNemar exact p {mcnemar_exact(new, lost):.3f}")
