"""``world-env pipeline`` end to end on real LIBERO with every stage shrunk to a few steps:
the stages run in order as their own processes, the report is written from what they
produced, a second run skips every stage, and a changed option reruns only the stages it
reaches. Then the default start from the shipped pretrained artifacts: they are checked
(sha256, what they are for), stand in for the training stages, and load into the later ones;
a shipped control-arm policy stands in for post-train-libero only when its config is the run's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from world_env_training import configs, pretrained
from world_env_training.pipeline import shipped_control, stage_configs

SHIPPED = Path(__file__).resolve().parents[1] / pretrained.EMBEDDED_DEFAULT
TRAINING = ["collect-demos", "train-sft", "explore", "train-autoencoder", "train-world-model", "train-reflector"]
LATER = ["evaluate-world-model", "post-train", "evaluate-sft", "evaluate-loop", "audit-reward-hacking"]
# The later stages shrunk to a few steps (the control arm trained for one update, as its shipped
# policy was trained with the default options).
SHORT = ["--loop_updates", "1", "--loop_batch_size", "1", "--rollouts_per_state", "2", "--loop_max_steps", "8",
         "--eval_episodes_per_task", "1", "--control_updates", "1", "--audit_starts", "1", "--workers", "2"]
TINY = ["--pretrained", "", "--suites", "libero_object", "--task_ids", "0", "--demos_per_task", "2", "--sft_steps", "2",
        "--explore_episodes_per_task", "1", "--explore_max_steps", "24", "--autoencoder_steps", "2",
        "--world_model_steps", "2", "--reflector_steps", "2",
        "--arm", "gains", "--control_arm", "false", *SHORT]


def _pipeline(run_dir, *extra, timeout=1500, options=TINY):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "world_env_training.cli", "pipeline", "--run_dir", str(run_dir),
                           *options, *extra], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=SHIPPED.parents[1])


def _plan(stdout: str) -> dict[str, str]:
    return {line.split()[1]: line for line in stdout.splitlines() if line.strip()[:2].strip(".").isdigit()}


@pytest.mark.libero
def test_pipeline_runs_every_stage_then_caches_them(tmp_path, report):
    run = tmp_path / "run"
    out = _pipeline(run)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-6000:]
    stages = TRAINING + LATER
    seconds = {}
    for name in stages:
        record = json.loads((run / "pipeline" / f"{name}.done.json").read_text())
        seconds[name] = record["seconds"]
        assert (run / "pipeline" / f"{name}.yaml").is_file()
    report("tiny pipeline stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))

    text = (run / "report.md").read_text()
    assert "| SFT |" in text and "| World-Env (LOOP in imagination) |" in text and "control arm" not in text
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
    assert audit["init_states"] == held and audit["rollouts"] == len(held)  # audit_rollouts_per_state 1
    assert "false_success_rate" in audit and audit["real_eval"]["episodes"] == len(held)
    assert "Reward hacking" in text

    # Everything cached: nothing runs, the report is written again.
    again = _pipeline(run, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done, cached") == len(stages) and "=== pipeline stage" not in again.stdout

    # A LOOP option changed: post-train (resuming) and what follows it run again, nothing before.
    plan = _pipeline(run, "--loop_updates", "2", "--dry_run", "true", timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    lines = _plan(plan.stdout)
    assert "configuration changed" in lines["post-train"] and "post-train runs first" in lines["evaluate-loop"]
    assert "post-train, evaluate-loop runs first" in lines["audit-reward-hacking"]
    assert "done, cached" in lines["train-sft"] and "done, cached" in lines["evaluate-sft"]


def test_stage_options_reach_their_stages(tmp_path):
    cfg = configs.PipelineConfig(run_dir=str(tmp_path), arm="gains", loop_lr=3e-5, audit_rollouts_per_state=3,
                                 audit_starts=7, explore_max_steps=40)
    stages = stage_configs(cfg)
    assert stages["explore"][1].max_steps == 40
    post, audit = stages["post-train"][1], stages["audit-reward-hacking"][1]
    assert (post.arm, audit.arm, post.lr_lora, post.lr_heads) == ("gains", "gains", 3e-5, 3e-5)
    assert (audit.rollouts_per_state, audit.starts) == (3, 7)
    assert post.policy == f"{cfg.pretrained}/sft" and post.world_model == f"{cfg.pretrained}/world_model"
    assert stages["evaluate-sft"][1].training_datasets == [f"{cfg.pretrained}/{d}"
                                                           for d in ("demos", "explore", "explore_more")]
    evaluate = stages["evaluate-sft"][1]
    assert (evaluate.init_state_source, evaluate.episodes_per_task) == ("drawn", 50)
    scratch = stage_configs(configs.PipelineConfig(run_dir=str(tmp_path), pretrained="",
                                                   demo_init_state_ids=[106, 157, 138, 114, 113]))
    assert scratch["post-train"][1].policy == str(tmp_path / "sft") and scratch["post-train"][1].arm == "physics"
    assert scratch["collect-demos"][1].init_state_ids == [106, 157, 138, 114, 113]
    assert stages["collect-demos"][1].init_state_ids == []
    assert scratch["evaluate-world-model"][1].holdout == ""


def test_control_arm_and_drawn_evaluation_options(tmp_path):
    cfg = configs.PipelineConfig(run_dir=str(tmp_path), control_arm=True, control_updates=5,
                                 eval_episodes_per_task=60)
    stages = stage_configs(cfg)
    control, post = stages["post-train-libero"][1], stages["post-train"][1]
    assert (control.env, control.updates, control.policy) == ("libero", 5, post.policy)
    assert (control.lr_lora, control.rollouts_per_state, control.batch_size) == (post.lr_lora, 8, 2)
    assert control.output_dir != post.output_dir
    evaluate = stages["evaluate-control"][1]
    assert evaluate.policy == control.output_dir and evaluate.init_state_source == "drawn"
    assert evaluate.episodes_per_task == 60 and stages["evaluate-sft"][1].init_state_source == "drawn"
    with pytest.raises(ValueError, match="demo_init_state_ids.*with a pretrained start"):
        configs.PipelineConfig(demo_init_state_ids=[106, 157, 138, 114, 113])
    with pytest.raises(ValueError, match=r"demo_init_state_ids=\[106, 106, 138, 114, 113\].*distinct"):
        configs.PipelineConfig(pretrained="", demo_init_state_ids=[106, 106, 138, 114, 113])
    with pytest.raises(ValueError, match=r"demo_init_state_ids=\[106, 157\].*at least demos_per_task \(5\)"):
        configs.PipelineConfig(pretrained="", demo_init_state_ids=[106, 157])
    with pytest.raises(ValueError, match="eval_episodes_per_task.*at most 50 with eval_init_state_source saved"):
        configs.PipelineConfig(eval_episodes_per_task=60, eval_init_state_source="saved")
    # The plan: control stages listed, run only when asked for.
    for flag, state in (("false", "not used (control_arm false)"), ("true", "to run")):
        out = _pipeline(tmp_path / "plan", "--control_arm", flag, "--dry_run", "true", timeout=300, options=SHORT)
        assert out.returncode == 0, out.stderr[-3000:]
        plan = _plan(out.stdout)
        assert state in plan["post-train-libero"] and state in plan["evaluate-control"]


def _with_control(folder: Path, config: dict, metrics: list[dict]) -> None:
    """Add a control artifact to the pretrained ``folder``: the shipped SFT policy standing in for
    a trained one, recorded as trained with ``config``."""
    source = folder.parent / "control_run"
    shutil.copytree(folder / "sft", source)
    state = json.loads((source / "train_state.json").read_text())
    (source / "train_state.json").write_text(json.dumps(dict(state, train_config=config)))
    (source / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    pretrained.add({"artifacts": {"control": {"source": str(source), "stage": "post-train-libero", "command": "c",
                                              "commit": "x", "half": False}}}, folder)


def test_a_shipped_control_policy_stands_in_for_its_stage(tmp_path):
    from world_env_training.report import write_report

    folder = tmp_path / "pretrained"
    shutil.copytree(SHIPPED, folder, ignore=lambda path, names: ["control"] if Path(path) == SHIPPED else [])
    manifest = json.loads((folder / pretrained.MANIFEST).read_text())
    del manifest["artifacts"]["control"]
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("control/")}
    (folder / pretrained.MANIFEST).write_text(json.dumps(manifest))
    cfg = configs.PipelineConfig(run_dir=str(tmp_path / "run"), pretrained=str(folder))
    assert stage_configs(cfg)["evaluate-control"][1].policy == str(tmp_path / "run" / "loop_libero")
    trained = stage_configs(cfg)["post-train-libero"][1]
    # As recorded by a run elsewhere: another output folder, worker count and device.
    recorded = dict(trained.to_dict(), output_dir="runs/elsewhere/loop_libero", libero_workers=1, device="cuda")
    _with_control(folder, recorded, [{"update": u, "return_mean": r} for u, r in ((1, 0.125), (2, 0.5))])
    assert pretrained.verify(folder)["artifacts"]["control"]["config"] == recorded
    stages = stage_configs(cfg)
    assert stages["evaluate-control"][1].policy == str(folder / "control") == shipped_control(cfg, trained)
    # Any LOOP option that changes what the control arm learns trains it here instead.
    for option in ({"control_updates": 13}, {"loop_lr": 3e-5}, {"seed": 1}, {"rollouts_per_state": 4}):
        changed = configs.PipelineConfig(run_dir=str(tmp_path / "run"), pretrained=str(folder), **option)
        assert stage_configs(changed)["evaluate-control"][1].policy == str(tmp_path / "run" / "loop_libero"), option

    out = _pipeline(cfg.run_dir, "--pretrained", str(folder), "--dry_run", "true", options=[], timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    plan = _plan(out.stdout)
    assert f"pretrained (not run): {folder / 'control'}" in plan["post-train-libero"]
    assert "to run" in plan["evaluate-control"]
    out = _pipeline(cfg.run_dir, "--pretrained", str(folder), "--control_updates", "3", "--dry_run", "true",
                    options=[], timeout=120)
    assert "to run" in _plan(out.stdout)["post-train-libero"]

    text = write_report(cfg, stages, {"autoencoder_eval": str(folder / "nothing.json"),
                                      "reflector": str(folder / "reflector")}).read_text()
    assert "Success share of its rollouts per update: 0.12, 0.50." in text
    assert f"pretrained `{folder / 'control'}`" in text and "Only its evaluation ran here." in text
    assert f"| post-train-libero | pretrained, `{folder / 'control'}` | - |" in text
    again = {"source": str(tmp_path / "control_run"), "stage": "post-train-libero", "command": "c", "commit": "x"}
    with pytest.raises(FileExistsError, match="already has an artifact 'control'"):
        pretrained.add({"artifacts": {"control": again}}, folder)
    with pytest.raises(pretrained.PretrainedError, match="'policy' .stage post-train.: not an artifact a folder"):
        pretrained.add({"artifacts": {"policy": dict(again, stage="post-train")}}, folder)


def test_shipped_artifacts_are_verified(tmp_path, monkeypatch):
    manifest = pretrained.verify(SHIPPED)
    total = sum(f["bytes"] for f in manifest["files"].values())
    assert total < 60 * 2**20 and set(pretrained.STAGES) <= set(manifest["artifacts"])
    for art in manifest["artifacts"].values():
        assert art["command"] and art["commit"] and art["config"]
    # The default's control arm is the shipped one: evaluated, not trained again.
    monkeypatch.chdir(SHIPPED.parents[1])
    cfg = configs.PipelineConfig()
    assert shipped_control(cfg, stage_configs(cfg)["post-train-libero"][1]) == f"{pretrained.EMBEDDED_DEFAULT}/control"

    copy = tmp_path / "copy"
    shutil.copytree(SHIPPED, copy)
    weights = copy / "world_model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # one flipped bit in a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(pretrained.PretrainedError, match="world_model/model.safetensors: sha256"):
        pretrained.verify(copy)
    (copy / "world_model" / "model.safetensors").unlink()
    with pytest.raises(pretrained.PretrainedError, match="model.safetensors: missing"):
        pretrained.verify(copy)
    with pytest.raises(pretrained.PretrainedError, match="no manifest.json"):
        pretrained.verify(tmp_path)

    # The pipeline refuses a folder made for another run before any stage runs.
    out = _pipeline(tmp_path / "run", "--pretrained", str(copy), "--dry_run", "true", options=[], timeout=120)
    assert out.returncode == 2 and "model.safetensors" in out.stderr
    out = _pipeline(tmp_path / "run", "--suites", "libero_goal", "--dry_run", "true", options=[], timeout=120)
    assert out.returncode == 2 and "this run asks for {'suites': ['libero_goal']}" in out.stderr


def test_export_writes_half_precision_and_sums(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    source = tmp_path / "model"
    source.mkdir()
    weights = {"w": torch.randn(4, 4), "steps": torch.arange(3)}
    save_file(weights, str(source / "model.safetensors"))
    save_file({"mean": torch.randn(7, dtype=torch.float64)}, str(source / "processor.safetensors"))
    (source / "optimizer.pt").write_bytes(b"not shipped")
    (source / "train_state.json").write_text(json.dumps({"step": 3, "train_config": {"steps": 3}}))
    spec = {"for": {"suites": ["libero_object"]}, "artifacts": {
        name: {"source": str(source), "stage": stage, "command": "c", "commit": "x"}
        for name, stage in pretrained.STAGES.items()}}
    manifest = pretrained.export(spec, tmp_path / "out")
    out = tmp_path / "out" / "sft"
    half = load_file(str(out / "model.safetensors"))
    assert half["w"].dtype == torch.float16 and half["steps"].dtype == torch.int64
    assert torch.allclose(half["w"].float(), weights["w"], rtol=1e-3, atol=1e-4)
    assert load_file(str(out / "processor.safetensors"))["mean"].dtype == torch.float64  # statistics stay exact
    assert not (out / "optimizer.pt").exists() and manifest["artifacts"]["sft"]["config"] == {"steps": 3}
    assert pretrained.verify(tmp_path / "out") == manifest
    with pytest.raises(FileExistsError):
        pretrained.export(spec, tmp_path / "out")


@pytest.mark.libero
def test_pipeline_from_the_shipped_artifacts(tmp_path, report):
    run = tmp_path / "run"
    # The LOOP policy's evaluation and audit run as in the from-scratch test above.
    skipped = ["evaluate-loop", "audit-reward-hacking"]
    out = _pipeline(run, "--skip", ",".join(skipped), options=SHORT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-6000:]
    plan = _plan(out.stdout)
    assert all("pretrained (not run)" in plan[name] for name in TRAINING)
    assert all("skipped" in plan[name] for name in skipped)
    # SHORT's LOOP options are not the shipped control arm's: it trains here, for one update.
    assert "to run" in plan["post-train-libero"]
    assert len((run / "loop_libero" / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((run / "eval_control" / "eval.json").read_text())["summary"]
    assert not any((run / name).exists() for name in ("demos", "sft", "explore", "world_model", "reflector"))
    seconds = {name: json.loads((run / "pipeline" / f"{name}.done.json").read_text())["seconds"]
               for name in LATER + ["post-train-libero", "evaluate-control"] if name not in skipped}
    report("pipeline from pretrained, short later stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    post = json.loads((run / "pipeline" / "post-train.done.json").read_text())["config"]
    assert post["policy"] == f"{pretrained.EMBEDDED_DEFAULT}/sft" and post["arm"] == "physics"
    assert json.loads((run / "loop" / "metrics.jsonl").read_text().splitlines()[0])["update"] == 1
    evaluated = json.loads((run / "eval_sft" / "eval.json").read_text())
    assert evaluated["training_init_states"] == {"libero_object/0": [0, 1, 2, 3, 4]}
    assert not set(evaluated["init_states"]["libero_object/0"]) & {0, 1, 2, 3, 4}
    text = (run / "report.md").read_text()
    assert "pretrained artifacts in `pretrained/embedded_default`" in text
    assert "| world_model | train-world-model |" in text
    assert "## Instant Reflector on held-out real episodes" in text and "| auroc |" in text  # the shipped eval.md


def test_report_table_has_a_row_and_a_difference_per_arm():
    from world_env_training.eval.evaluation import summarise
    from world_env_training.report import CONTROL_ROW, LOOP_ROW, SFT_ROW, success_table

    def result(successes):
        episodes = [{"suite": "libero_object", "task_id": 0, "protocol": "gt_termination", "instruction": "x",
                     "init_state_id": 50 + i, "success": i < successes, "steps": 100, "ended": "success"}
                    for i in range(60)]
        return {"summary": summarise(episodes), "episodes": episodes}

    lines = "\n".join(success_table({SFT_ROW: result(15), LOOP_ROW: result(15), CONTROL_ROW: result(30)}))
    assert f"| {SFT_ROW} | 25.0" in lines and f"| {CONTROL_ROW} | 50.0" in lines
    # Nested successes: LOOP equals SFT on every state; the control arm adds 15 and loses none.
    assert "0.0 points" in lines and "both succeed on 15, only this arm on 0, only SFT on 0, neither on 45" in lines
    control = lines.split(f"{CONTROL_ROW} minus SFT")[1]
    assert "+25.0 points" in control and "is above zero" in control and "only this arm on 15" in control
    without = "\n".join(success_table({SFT_ROW: result(15), LOOP_ROW: None}))
    assert "minus SFT" not in without and LOOP_ROW not in without
