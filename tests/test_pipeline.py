"""``world-env pipeline`` end to end on real LIBERO with every stage shrunk to a few steps:
the stages run in order as their own processes, the report is written from what they
produced, a second run skips every stage, and a changed option reruns only the stages it
reaches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TINY = ["--suites", "libero_object", "--task_ids", "0", "--demos_per_task", "2", "--sft_steps", "2",
        "--explore_episodes_per_task", "1", "--autoencoder_steps", "2", "--world_model_steps", "2", "--reflector_steps", "2",
        "--loop_updates", "1", "--loop_batch_size", "1", "--rollouts_per_state", "2", "--loop_max_steps", "8",
        "--eval_episodes_per_task", "1", "--workers", "2"]


def _pipeline(run_dir, *extra, timeout=1500):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "world_env_training.cli", "pipeline", "--run_dir", str(run_dir),
                           *TINY, *extra], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.libero
def test_pipeline_runs_every_stage_then_caches_them(tmp_path, report):
    run = tmp_path / "run"
    out = _pipeline(run)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-6000:]
    stages = ["collect-demos", "train-sft", "explore", "train-autoencoder", "train-world-model", "train-reflector",
              "evaluate-world-model", "post-train", "evaluate-sft", "evaluate-loop", "audit-reward-hacking"]
    seconds = {}
    for name in stages:
        record = json.loads((run / "pipeline" / f"{name}.done.json").read_text())
        seconds[name] = record["seconds"]
        assert (run / "pipeline" / f"{name}.yaml").is_file()
    report("tiny pipeline stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))

    text = (run / "report.md").read_text()
    assert "| SFT |" in text and "| World-Env (LOOP) |" in text
    for figure in ("training_curves.png", "success.png"):
        assert (run / "report" / figure).stat().st_size > 1000
    sft = json.loads((run / "eval_sft" / "eval.json").read_text())["summary"]["overall"]
    assert set(sft) == {"gt_termination", "self_termination"} and sft["gt_termination"]["episodes"] == 1
    assert json.loads((run / "loop" / "metrics.jsonl").read_text().splitlines()[0])["update"] == 1
    # Evaluation and the audit use init states no training dataset (demos, exploration) started from.
    evaluated = json.loads((run / "eval_loop" / "eval.json").read_text())
    held = sorted(i for ids in evaluated["init_states"].values() for i in ids)
    used = {i for ids in evaluated["training_init_states"].values() for i in ids}
    assert held and used and not set(held) & used
    audit = json.loads((run / "audit" / "audit.json").read_text())
    assert audit["init_states"] == held and audit["rollouts"] == len(held) * 2  # 2 rollouts per state
    assert "false_success_rate" in audit and audit["real_eval"]["episodes"] == len(held)
    assert "Reward hacking" in text

    # Everything cached: nothing runs, the report is written again.
    again = _pipeline(run, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done, cached") == len(stages) and "=== pipeline stage" not in again.stdout

    # A LOOP option changed: post-train (resuming) and what follows it run again, nothing before.
    plan = _pipeline(run, "--loop_updates", "2", "--dry_run", "true", timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    lines = {line.split()[1]: line for line in plan.stdout.splitlines() if line.strip()[:2].strip(".").isdigit()}
    assert "configuration changed" in lines["post-train"] and "post-train runs first" in lines["evaluate-loop"]
    assert "post-train, evaluate-loop runs first" in lines["audit-reward-hacking"]
    assert "done, cached" in lines["train-sft"] and "done, cached" in lines["evaluate-sft"]
