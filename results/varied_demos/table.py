"""Print the tables of results/varied_demos/README.md from the committed files.

Every row is an evaluation on the drawn init states 50-99 (GT termination), which no stage used.
The chosen scenes' SFT policy is first paired against the shipped one (saved states, an older
commit's training code). Then SFT policies trained by today's code on the 5 demonstrations from
LIBERO's saved states 0-4 and on the 5 from the chosen drawn scenes (choose_starts.py) are
paired against each other, seed by seed. The chosen scenes' policy drawing its chunks and the
LOOP arms trained from it are paired against its means. Each row lists the states it gains and
loses; last, the control arm's rollout success per block of updates (standard error over the
block's updates) from its metrics.jsonl. It also counts, per evaluation here, the held-out states
no evaluation of the shipped SFT policy and its LOOP arms ever solved.

    python results/varied_demos/table.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from world_env_training.eval import stats

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parent / "pipeline_default/eval_sft/eval.json"
SAVED = {0: HERE / "sft_saved/eval.json", 1: HERE / "sft_saved_seed1/eval.json"}
CHOSEN = {0: HERE / "sft_chosen/eval.json", 1: HERE / "sft_chosen_seed1/eval.json"}
FROM_CHOSEN = [("chosen scenes' SFT drawing its chunks, temperature 0.25", HERE / "sft_chosen_t0.25/eval.json"),
               ("control arm from it, temperature 0.25, 3 x 8 rollouts of up to 128 steps, after update 15",
                HERE / "loop_libero_t025_b3/eval_update15/eval.json"),
               ("the same, after update 30", HERE / "loop_libero_t025_b3/eval/eval.json"),
               ("LOOP in imagination from it (the embedded default's post-train, 8 updates)",
                HERE / "loop_imagined/eval/eval.json")]
RUN = HERE / "loop_libero_t025_b3/metrics.jsonl"
BLOCK = 15


def changed(name: str, arm: dict, base: dict) -> None:
    gained, lost = stats.flipped(arm, base)
    print(f"  {name}: gained {gained}, lost {lost}")


def never_solved(shipped: dict) -> None:
    """How many of the held-out states that no evaluation of the shipped SFT policy and the
    policies trained from it ever solved (../policy_movement/table.py's list) each evaluation
    here solves."""
    earlier = stats.outcomes_under(HERE.parent, shipped, exclude=[HERE])
    ever = stats.solved_elsewhere(earlier, shipped)
    never = [key for key in shipped if not shipped[key] and key not in ever]
    print(f"\nof the {len(never)} held-out states no evaluation of the shipped SFT and its LOOP arms "
          f"({len(earlier)} under results/) ever solved, solved here by")
    solved = set()
    for path, arm in stats.outcomes_under(HERE, shipped):
        solved |= {key for key in never if arm[key]}
        print(f"  {path.parent.relative_to(HERE)}: {sum(arm[key] for key in never)}")
    print(f"  any of these: {len(solved)}")


def main() -> None:
    shipped, means = stats.file_outcomes(SHIPPED), stats.file_outcomes(CHOSEN[0])
    print(f"shipped SFT (saved states 0-4, commit 150dca5): {stats.rate_summary(shipped)}")
    print("  chosen scenes' SFT, seed 0: " + stats.paired_summary(means, shipped, "shipped"))
    print("\nSFT on the chosen scenes' demonstrations, paired against SFT on saved states 0-4, same code and seed")
    for seed in SAVED:
        if not (SAVED[seed].is_file() and CHOSEN[seed].is_file()):
            print(f"  seed {seed}: missing")
            continue
        saved, chosen = stats.file_outcomes(SAVED[seed]), stats.file_outcomes(CHOSEN[seed])
        print(f"  seed {seed}: saved states {stats.rate_summary(saved)}; chosen scenes "
              + stats.paired_summary(chosen, saved, "saved states"))
        changed(f"seed {seed}, chosen against saved", chosen, saved)
    print(f"\npaired against the chosen scenes' SFT means (seed 0), {stats.rate_summary(means)}")
    for name, path in FROM_CHOSEN:
        print("  " + stats.arm_line(name, path, means, HERE))
        if path.is_file():
            changed(name, stats.file_outcomes(path), means)
    never_solved(shipped)
    if RUN.is_file():
        rows = [json.loads(line) for line in RUN.read_text().splitlines() if line.strip()]
        print("\ncontrol arm's rollouts: success share per block of updates, mean +- standard error over updates")
        for start in range(0, len(rows), BLOCK):
            block = np.array([r["return_mean"] for r in rows[start:start + BLOCK]])
            stepped = sum(r["ppo_steps"] > 0 for r in rows[start:start + BLOCK])
            print(f"  updates {start + 1}-{start + len(block)}: {100 * block.mean():.0f} +- "
                  f"{100 * block.std(ddof=1) / np.sqrt(len(block)):.0f} %, {stepped} updates took a PPO step")


if __name__ == "__main__":
    main()
