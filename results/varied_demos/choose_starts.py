"""Choose the scenes 5 demonstrations start from so that they cover the starts evaluation meets.

results/policy_movement/reach.py found the SFT means succeed where the gripper starts near a
demonstration's start (9/14 within 0.6 cm, 0/8 beyond 1.2 cm). LIBERO's saved init states 0-4,
which the demonstrations used so far, are 5 draws of its scene sampler. This script draws 100
candidate scenes from the same sampler (ids 100-199: drawn, as the held-out states 50-99 are, and
used by no evaluation), reads where the gripper (xyz) and the basket (xy) start, and picks 5 by
greedy k-medoids: each pick lowers most the candidates' mean distance to their nearest pick.
It prints the ids in pick order, then the others by how much they would add, so collect-demos
can try them in order and skip a scene where the expert fails. It also prints how far the
held-out states 50-99 start from the nearest demonstration under either choice.

    python results/varied_demos/choose_starts.py     # about 1 min; output in choose_starts.txt
"""

from __future__ import annotations

import numpy as np

CANDIDATES = list(range(100, 200))
HELD_OUT = list(range(50, 100))
SAVED = [0, 1, 2, 3, 4]
PICKS = 5


def starts(ids: list[int]) -> dict[int, np.ndarray]:
    """{state: gripper xyz and basket xy at the start, in cm}."""
    from world_env_libero.env import LiberoEnv

    with LiberoEnv("libero_object", 0, resolution=64) as env:
        out = {}
        for i in ids:
            env.reset(i)
            out[i] = 100 * np.concatenate([np.asarray(env.raw_obs["robot0_eef_pos"])[:3],
                                           np.asarray(env.raw_obs["basket_1_pos"])[:2]])
        return out


def greedy_medoids(points: np.ndarray, k: int) -> list[int]:
    """Indices of k points chosen one at a time, each minimising the mean nearest distance."""
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    chosen: list[int] = []
    nearest = np.full(len(points), np.inf)
    for _ in range(k):
        cost = np.minimum(nearest[None], dist).mean(axis=1)
        cost[chosen] = np.inf
        best = int(np.argmin(cost))
        chosen.append(best)
        nearest = np.minimum(nearest, dist[best])
    return chosen


def nearest_cm(where: dict, ids: list[int], demos: list[int], dims: slice) -> np.ndarray:
    return np.array([min(np.linalg.norm(where[i][dims] - where[d][dims]) for d in demos) for i in ids])


def main() -> None:
    where = starts(SAVED + HELD_OUT + CANDIDATES)
    points = np.stack([where[i] for i in CANDIDATES])
    order = [CANDIDATES[j] for j in greedy_medoids(points, len(CANDIDATES))]
    chosen = order[:PICKS]
    print(f"init_state_ids, in pick order (the first {PICKS} are the choice): {order}")
    for name, demos in (("saved states 0-4", SAVED), (f"chosen {chosen}", chosen)):
        for part, dims in (("gripper", slice(0, 3)), ("basket", slice(3, 5))):
            d = nearest_cm(where, HELD_OUT, demos, dims)
            print(f"held-out 50-99 to the nearest of {name}, {part}: median {np.median(d):.2f} cm, "
                  f"mean {d.mean():.2f}, max {d.max():.2f}, beyond 1.2 cm {int((d > 1.2).sum())}/50")


if __name__ == "__main__":
    main()
