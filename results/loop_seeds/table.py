"""Print the seed table of results/loop_seeds/README.md from the committed eval.json files:
each LOOP seed's real success on drawn init states 50-99 and its paired difference from SFT.

    python results/loop_seeds/table.py
"""

from __future__ import annotations

import json
from pathlib import Path

from world_env_training.eval import stats

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent / "pipeline_default"
ARMS = {"seed 0 (the default's run)": DEFAULT / "eval_loop/eval.json",
        **{f"seed {s}": HERE / f"eval_loop_seed{s}/eval.json" for s in (1, 2, 3)}}


def outcomes(path: Path, protocol: str) -> dict:
    return {e["init_state_id"]: bool(e["success"]) for e in json.loads(path.read_text())["episodes"]
            if e["protocol"] == protocol}


def main() -> None:
    for protocol in ("gt_termination", "self_termination"):
        sft = outcomes(DEFAULT / "eval_sft/eval.json", protocol)
        lo, hi = stats.wilson_interval(sum(sft.values()), len(sft))
        print(f"{protocol}: SFT {sum(sft.values())}/{len(sft)} [{100 * lo:.1f}, {100 * hi:.1f}]")
        totals = []
        for name, path in ARMS.items():
            if not path.is_file():
                print(f"  {name}: {path} missing")
                continue
            loop = outcomes(path, protocol)
            assert loop.keys() == sft.keys(), f"{path}: other init states than SFT's"
            table = stats.paired_table(loop, sft)
            diff, low, high = stats.paired_newcombe_interval(*table)
            lo, hi = stats.wilson_interval(sum(loop.values()), len(loop))
            totals.append(sum(loop.values()))
            print(f"  LOOP {name}: {sum(loop.values())}/{len(loop)} [{100 * lo:.1f}, {100 * hi:.1f}]; minus SFT, "
                  f"paired {100 * diff:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] "
                  f"(both {table[0]}, only LOOP {table[1]}, only SFT {table[2]}, neither {table[3]})")
        mean = sum(totals) / len(totals)
        print(f"  LOOP over {len(totals)} seeds: {min(totals)}-{max(totals)} successes, mean {mean:.2f}")


if __name__ == "__main__":
    main()
