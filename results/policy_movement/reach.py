"""Where the held-out states the SFT means fail lie, against the 5 demonstrations' scenes.

For LIBERO object task 0 (pick up the alphabet soup, place it in the basket) it resets LIBERO to
each demonstration's init state (0-4) and each held-out drawn state (50-99) and reads where
things start: the gripper, the soup can, the basket and the five other objects. For the states
the means solve, those they fail that some evaluation under results/ solved (table.py's list)
and those never solved, it prints each one's distance to the nearest demonstration's (cm). A
policy that replays what it was shown succeeds near the demonstrations and fails far from them.

    python results/policy_movement/reach.py     # about 1 min; output in reach.txt
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from world_env_training.eval import stats

HERE = Path(__file__).resolve().parent
# Policies trained from other demonstrations: not exploration around this SFT policy's replay.
OTHER_START = HERE.parent / "varied_demos"
SFT = HERE.parent / "pipeline_default/eval_sft/eval.json"
BINS_CM = [(0.0, 0.6), (0.6, 0.9), (0.9, 1.2), (1.2, 3.0)]
OTHERS = ("salad_dressing", "cream_cheese", "milk", "tomato_sauce", "butter")
PARTS = {"gripper": ["robot0_eef_pos"], "soup": ["alphabet_soup_1_pos"], "basket": ["basket_1_pos"],
         "other objects": [f"{name}_1_pos" for name in OTHERS]}


def positions(ids: list[int]) -> dict[int, dict[str, np.ndarray]]:
    """{state: {part: its start positions, flattened}} (the gripper in xyz, objects on the table in xy)."""
    from world_env_libero.env import LiberoEnv

    with LiberoEnv("libero_object", 0, resolution=64) as env:
        out = {}
        for i in ids:
            env.reset(i)
            out[i] = {part: np.concatenate([np.asarray(env.raw_obs[key])[:3 if part == "gripper" else 2]
                                            for key in keys]) for part, keys in PARTS.items()}
        return out


def reached(sft: dict) -> set[int]:
    """Held-out states the means fail that some evaluation under results/ (but OTHER_START) solved."""
    evaluations = stats.outcomes_under(HERE.parent, sft, exclude=[OTHER_START])
    return {key[2] for key in stats.solved_elsewhere(evaluations, sft)}


def main() -> None:
    sft = stats.file_outcomes(SFT)
    held = sorted(key[2] for key in sft)
    demos = [0, 1, 2, 3, 4]
    where = positions(demos + held)
    ever = reached(sft)
    groups = {"solved by the means": [k[2] for k in sft if sft[k]],
              "failed, solved by some evaluation": [k[2] for k in sft if not sft[k] and k[2] in ever],
              "failed, never solved": [k[2] for k in sft if not sft[k] and k[2] not in ever]}
    # cm to the nearest demonstration's start, RMS over the part's objects so that "other
    # objects" compares with one object
    nearest = {part: {i: 100 * min(np.linalg.norm(where[i][part] - where[j][part]) for j in demos)
                      / np.sqrt(len(keys)) for i in held} for part, keys in PARTS.items()}
    print("distance of each part's start to the nearest demonstration's (cm, RMS over its objects): "
          "median [range] per group")
    for name, ids in groups.items():
        cells = []
        for part in PARTS:
            d = np.array([nearest[part][i] for i in ids])
            cells.append(f"{part} {np.median(d):.1f} [{d.min():.1f}, {d.max():.1f}]")
        print(f"  {name} ({len(ids)}): " + ", ".join(cells))
    print("the means' success by the gripper's start distance to the nearest demonstration's")
    gripper = nearest["gripper"]
    won = {key[2]: sft[key] for key in sft}
    for low, high in BINS_CM:
        ids = [i for i in held if low <= gripper[i] < high]
        print(f"  {low:.1f}-{high:.1f} cm: {sum(won[i] for i in ids)}/{len(ids)}")


if __name__ == "__main__":
    main()
