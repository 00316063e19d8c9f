"""Print the seed table of results/loop_seeds/README.md from the committed eval.json files:
each LOOP seed's real success on drawn init states 50-99 and its paired difference from SFT.

    python results/loop_seeds/table.py
"""

from __future__ import annotations

from pathlib import Path

from world_env_training.eval import stats

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent / "pipeline_default"
ARMS = {"seed 0 (the default's run)": DEFAULT / "eval_loop/eval.json",
        **{f"seed {s}": HERE / f"eval_loop_seed{s}/eval.json" for s in (1, 2, 3)}}


def main() -> None:
    for protocol in ("gt_termination", "self_termination"):
        sft = stats.file_outcomes(DEFAULT / "eval_sft/eval.json", protocol)
        print(f"{protocol}: SFT {stats.rate_summary(sft)}")
        totals = []
        for name, path in ARMS.items():
            if not path.is_file():
                print(f"  {name}: {path} missing")
                continue
            loop = stats.file_outcomes(path, protocol)
            try:
                print(f"  LOOP {name}: {stats.paired_summary(loop, sft)}")
            except ValueError as err:  # evaluated other init states than SFT's
                raise SystemExit(f"{path}: {err}") from None
            totals.append(sum(loop.values()))
        mean = sum(totals) / len(totals)
        print(f"  LOOP over {len(totals)} seeds: {min(totals)}-{max(totals)} successes, mean {mean:.2f}")


if __name__ == "__main__":
    main()
