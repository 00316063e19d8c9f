"""Paired comparison of each arm with SFT on their shared held-out init states (README,
"Grounding imagination"): SFT successes kept and lost, new successes, and the exact two-sided
McNemar p-value of the discordant pairs.

    python results/grounding/paired.py
"""

import json
from math import comb
from pathlib import Path

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
    kept = sum(sft[i] and arm[i] for i in sft)
    lost = sum(sft[i] and not arm[i] for i in sft)
    new = sum(arm[i] and not sft[i] for i in sft)
    print(f"{name}: {sum(arm.values())}/{len(arm)}; of SFT's {sum(sft.values())} successes kept {kept}, lost {lost}; "
          f"new {new}; McNemar exact p {mcnemar_exact(new, lost):.3f}")
