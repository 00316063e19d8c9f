"""``world-env pipeline``: every stage in order, cached, ending with a report.

Stages (each one the ``world-env`` subcommand of the same name, run as its own process):

    collect-demos -> train-sft -> explore -> train-autoencoder -> train-world-model -> train-reflector ->
    evaluate-world-model -> post-train [-> post-train-libero] -> evaluate-sft -> evaluate-loop
    [-> evaluate-control] -> audit-reward-hacking -> report

The bracketed stages are the control arm (``control_arm``): LOOP with real LIBERO as the
environment, from the same SFT policy, evaluated like the others. A pretrained folder may ship
the control arm's policy (its ``control`` artifact): when that policy's post-train config is the
one post-train-libero would run here (``shipped_control``), the stage is not run and
evaluate-control evaluates the shipped policy.

Each stage's configuration is derived from the pipeline's options, written to
``RUN/pipeline/<stage>.yaml`` and run as ``world-env <command> --config RUN/pipeline/<stage>.yaml``
(the line is printed, so any stage can be rerun alone). When a stage finishes,
``RUN/pipeline/<stage>.done.json`` records its configuration and duration; the next run skips a
stage whose record matches its configuration and none of whose inputs (``INPUTS``) run again;
otherwise it runs again, resuming from its own checkpoints. train-autoencoder runs only for a
latent world model (``latent_world_model``, the default) (so raising ``sft_steps`` continues
training instead of starting over; delete a stage's folder to train it from scratch). A killed
pipeline therefore loses at most the unfinished part of one stage.

The report (``RUN/report.md``) has the paper's table (success rate of the SFT policy and of the
post-trained one, per suite, under ground-truth termination and under self-termination, with
Wilson 95% intervals), the reward-hacking audit of the post-trained policy's imagined rollouts
(replayed in real LIBERO) from the evaluation's held-out init states, with imagined against real
success on them, the world model's and the reflector's held-out quality, the training
curves (``RUN/report/training_curves.png``), success rates (``RUN/report/success.png``) and
imagined-vs-real frame strips.

Pretrained start. By default (``pretrained``: ``pretrained/embedded_default``) the training stages
(collect-demos, train-sft, explore, train-autoencoder, train-world-model, train-reflector) are
not run: their outputs are the artifacts shipped in that folder, every file checked against the
sha256 sums of its manifest before anything runs, and the later stages read them from there.
``--pretrained ''`` trains every stage from scratch instead.

Profiles. ``cpu`` (the embedded default): small models for two CPU cores (policy at 64x64
with 4 of SmolLM2's 30 layers, the latent world model sampled with 1 DDIM step, reflector with
8 LLM layers). ``full``: every stage's own defaults (the paper's sizes; for a GPU).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from world_env_training import configs, pretrained

PIPELINE_DIR = "pipeline"
REPORT_FILE = "report.md"

#: VLAConfig fields of the cpu profile's policy (a train-sft ``policy_config`` file).
CPU_POLICY = {"image_size": 64, "llm_layers": 4, "vision_grid": 2}

STAGE_ORDER = configs.STAGE_ORDER
#: The stages whose outputs each stage reads: when one of them runs, so does the stage.
INPUTS = {"collect-demos": (), "train-sft": ("collect-demos",), "explore": ("train-sft",),
          "train-autoencoder": ("collect-demos", "explore"),
          "train-world-model": ("collect-demos", "explore", "train-autoencoder"),
          "train-reflector": ("collect-demos", "explore", "train-autoencoder"),
          "evaluate-world-model": ("train-world-model",),
          "post-train": ("collect-demos", "train-sft", "train-world-model", "train-reflector"),
          "evaluate-sft": ("collect-demos", "explore", "train-sft", "train-reflector"),
          "evaluate-loop": ("collect-demos", "explore", "post-train", "train-reflector"),
          "post-train-libero": ("collect-demos", "train-sft", "train-reflector"),
          "evaluate-control": ("collect-demos", "explore", "post-train-libero", "train-reflector"),
          "audit-reward-hacking": ("train-world-model", "train-reflector", "post-train", "evaluate-loop")}


def artifacts(cfg: configs.PipelineConfig) -> dict[str, str | list[str]]:
    """Where the later stages find the training stages' outputs: in the run folder, or in the
    pretrained folder (``training_datasets``: every dataset in it, exploration included)."""
    run = Path(cfg.run_dir)
    if not cfg.pretrained:
        return {"demos": str(run / "demos"), "sft": str(run / "sft"), "world_model": str(run / "world_model"),
                "reflector": str(run / "reflector"), "autoencoder_eval": str(run / "autoencoder" / "eval.json"),
                "holdout": "", "training_datasets": [str(run / "demos"), str(run / "explore")]}
    folder = Path(cfg.pretrained)
    manifest = json.loads((folder / pretrained.MANIFEST).read_text())
    datasets = [name for name, art in manifest["artifacts"].items() if art["stage"] in ("collect-demos", "explore")]
    return {"demos": str(folder / "demos"), "sft": str(folder / "sft"), "world_model": str(folder / "world_model"),
            "reflector": str(folder / "reflector"),
            "autoencoder_eval": str(folder / "world_model" / "autoencoder" / "eval.json"),
            "holdout": str(folder / "world_model" / "holdout.json"),
            "training_datasets": [str(folder / name) for name in datasets]}


#: post-train-libero options that change where and how fast the control arm trains, not what
#: it learns: a shipped control policy stands in for the stage when all the others match.
#: (precision and physics_workers concern the world model, the reflector and the imagined arm,
#: which the pipeline's control arm, rewarded by LIBERO's success, does not run.)
CONTROL_FREE = ("output_dir", "libero_workers", "device", "precision", "physics_workers")


def shipped_control(cfg: configs.PipelineConfig, train_cfg: configs.PostTrainConfig) -> str:
    """The pretrained folder's control policy if post-train-libero would train the same here
    (its recorded config equals ``train_cfg`` but for ``CONTROL_FREE``); else ''."""
    if not cfg.pretrained:
        return ""
    art = json.loads((Path(cfg.pretrained) / pretrained.MANIFEST).read_text())["artifacts"].get("control")
    if art is None or not art.get("config"):
        return ""
    mine = {k: v for k, v in train_cfg.to_dict().items() if k not in CONTROL_FREE}
    # Options added after the policy was made are compared at their defaults, which is what it ran with.
    recorded = {k: v for k, v in art["config"].items() if k in configs.PostTrainConfig.__dataclass_fields__}
    theirs = {k: v for k, v in configs.PostTrainConfig(**recorded).to_dict().items() if k not in CONTROL_FREE}
    return str(Path(cfg.pretrained) / "control") if mine == theirs else ""


def check_pretrained(cfg: configs.PipelineConfig) -> dict:
    """Verify the pretrained folder's files and that it was made for this run; its manifest."""
    manifest = pretrained.verify(cfg.pretrained)
    wanted = {"suites": list(cfg.suites), "task_ids": list(cfg.task_ids), "resolution": cfg.resolution,
              "profile": cfg.profile}
    differs = {k: v for k, v in wanted.items() if manifest["for"].get(k) != v}
    if differs:
        raise pretrained.PretrainedError(
            f"{cfg.pretrained}: its artifacts are for {manifest['for']}, this run asks for {differs}; "
            "use --pretrained '' to train every stage for it")
    return manifest


def stage_configs(cfg: configs.PipelineConfig) -> dict[str, tuple[str, object]]:
    """{stage: (world-env command, its config object)} for every stage but the report."""
    run = Path(cfg.run_dir)
    common = {"seed": cfg.seed, "device": cfg.device}
    tasks = {"suites": list(cfg.suites), "task_ids": list(cfg.task_ids)}
    cpu = cfg.profile == "cpu"
    exploration = str(run / "explore") if cfg.exploration else ""
    sft_extra = {"policy_config": str(run / PIPELINE_DIR / "policy_config.yaml")} if cpu else {}
    autoencoder = str(run / "autoencoder") if cfg.latent_world_model else ""
    made = artifacts(cfg)
    # Evaluation holds out every init state a training dataset starts from: the demos (SFT, LOOP's
    # start states) and the exploration rollouts (world model, reflector), whether or not used.
    evaluate = dict(tasks, episodes_per_task=cfg.eval_episodes_per_task, protocol=cfg.protocol,
                    init_state_source=cfg.eval_init_state_source,
                    reflector=made["reflector"], training_datasets=made["training_datasets"],
                    resolution=cfg.resolution, workers=cfg.workers, **common)
    loop = dict(world_model=made["world_model"], reflector=made["reflector"], demos=made["demos"],
                max_steps=cfg.loop_max_steps, arm=cfg.arm, **common)
    control = configs.PostTrainConfig(
        policy=made["sft"], env="libero", output_dir=str(run / "loop_libero"),
        rollouts_per_state=cfg.rollouts_per_state, batch_size=cfg.loop_batch_size, updates=cfg.control_updates,
        lr_lora=cfg.loop_lr, lr_heads=cfg.loop_lr, libero_workers=cfg.workers, **loop)
    return {
        "collect-demos": ("collect-demos", configs.CollectDemosConfig(
            **tasks, demos_per_task=cfg.demos_per_task, init_state_ids=cfg.demo_init_state_ids,
            resolution=cfg.resolution, output_dir=str(run / "demos"), workers=cfg.workers, **common)),
        "train-sft": ("train-sft", configs.TrainSFTConfig(
            demos=str(run / "demos"), output_dir=str(run / "sft"), steps=cfg.sft_steps,
            save_every=max(1, cfg.sft_steps // 4), **sft_extra, **common)),
        "explore": ("explore", configs.ExploreConfig(
            policy=str(run / "sft"), **tasks, episodes_per_task=cfg.explore_episodes_per_task,
            max_steps=cfg.explore_max_steps, resolution=cfg.resolution, output_dir=str(run / "explore"),
            workers=cfg.workers, **common)),
        "train-autoencoder": ("train-autoencoder", configs.TrainAutoencoderConfig(
            demos=str(run / "demos"), exploration=exploration, output_dir=str(run / "autoencoder"),
            resolution=cfg.resolution, steps=cfg.autoencoder_steps, save_every=max(1, cfg.autoencoder_steps // 4),
            **common)),
        "train-world-model": ("train-world-model", configs.TrainWorldModelConfig(
            demos=str(run / "demos"), exploration=exploration, output_dir=str(run / "world_model"),
            autoencoder=autoencoder, arm_map=cfg.world_model_arm_map, frame_stride=cfg.world_model_frame_stride,
            resolution=cfg.resolution, steps=cfg.world_model_steps, save_every=max(1, cfg.world_model_steps // 4),
            **common)),
        "train-reflector": ("train-reflector", configs.TrainReflectorConfig(
            demos=str(run / "demos"), exploration=exploration, output_dir=str(run / "reflector"),
            steps=cfg.reflector_steps, save_every=max(1, cfg.reflector_steps // 4),
            eval_every=max(1, cfg.reflector_steps // 4), autoencoder=autoencoder, **common)),
        "evaluate-world-model": ("evaluate-world-model", configs.WorldModelEvalConfig(
            checkpoints=[f"world_model={made['world_model']}"], holdout=made["holdout"], max_episodes=2, horizon=24,
            starts_per_episode=1, one_step_stride=4, output_dir=str(run / "world_model_eval"), **common)),
        "post-train": ("post-train", configs.PostTrainConfig(
            policy=made["sft"], output_dir=str(run / "loop"), rollouts_per_state=cfg.rollouts_per_state,
            batch_size=cfg.loop_batch_size, updates=cfg.loop_updates, lr_lora=cfg.loop_lr, lr_heads=cfg.loop_lr,
            binary_reward=cfg.binary_reward, **loop)),
        "post-train-libero": ("post-train", control),
        "evaluate-sft": ("evaluate", configs.EvaluateConfig(
            policy=made["sft"], output_dir=str(run / "eval_sft"), **evaluate)),
        "evaluate-loop": ("evaluate", configs.EvaluateConfig(
            policy=str(run / "loop"), output_dir=str(run / "eval_loop"), **evaluate)),
        "evaluate-control": ("evaluate", configs.EvaluateConfig(
            policy=shipped_control(cfg, control) or control.output_dir, output_dir=str(run / "eval_control"),
            **evaluate)),
        "audit-reward-hacking": ("audit-reward-hacking", configs.AuditConfig(
            policy=str(run / "loop"), eval_json=str(run / "eval_loop" / "eval.json"), starts=cfg.audit_starts,
            rollouts_per_state=cfg.audit_rollouts_per_state,
            output_dir=str(run / "audit"), **loop)),
    }


def _done_record(run: Path, stage: str) -> dict | None:
    path = run / PIPELINE_DIR / f"{stage}.done.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_pipeline(cfg: configs.PipelineConfig) -> int:
    run = Path(cfg.run_dir)
    if cfg.pretrained:
        try:
            manifest = check_pretrained(cfg)
        except pretrained.PretrainedError as e:
            print(f"world-env pipeline: {e}", file=sys.stderr)
            return 2
    stages = stage_configs(cfg)
    print(f"world-env pipeline: run folder {run}, suites {', '.join(cfg.suites)}"
          + (f" tasks {cfg.task_ids}" if cfg.task_ids else "") + f", {cfg.resolution}x{cfg.resolution}, "
          f"profile {cfg.profile}, device {cfg.device}, seed {cfg.seed}", flush=True)
    if cfg.pretrained:
        print(f"  starting from the pretrained artifacts in {cfg.pretrained} ({len(manifest['files'])} files, "
              "sha256 verified); --pretrained '' trains every stage instead", flush=True)
    # A done-record names the pretrained manifest it ran against: new artifacts rerun every stage.
    source = pretrained.sha256(Path(cfg.pretrained) / pretrained.MANIFEST) if cfg.pretrained else ""
    shipped = cfg.control_arm and shipped_control(cfg, stages["post-train-libero"][1])
    plan = []
    runs: set[str] = set()
    for i, name in enumerate(STAGE_ORDER, 1):
        if name == "report":
            state = "always written"
        elif cfg.pretrained and name in pretrained.PIPELINE_STAGES:
            state = "pretrained (not run)"
        elif name in cfg.skip:
            state = "skipped (skip option)"
        elif name == "train-autoencoder" and not cfg.latent_world_model:
            state = "not used (latent_world_model false)"
        elif name in configs.CONTROL_STAGES and not cfg.control_arm:
            state = "not used (control_arm false)"
        elif name == "post-train-libero" and shipped:
            state = f"pretrained (not run): {shipped}"
        else:
            record = _done_record(run, name)
            changed = [s for s in INPUTS[name] if s in runs]
            if record is None:
                state = "to run"
            elif record["config"] != stages[name][1].to_dict():
                state = "to run again (configuration changed; resumes from its checkpoints)"
            elif record.get("pretrained", "") != source:
                state = "to run again (the pretrained artifacts changed)"
            elif changed:
                state = f"to run again ({', '.join(changed)} runs first)"
            else:
                state = "done, cached"
            if state.startswith("to run"):
                runs.add(name)
        plan.append((name, state))
        print(f"  {i:2d}. {name:<21} {state}", flush=True)
    if cfg.dry_run:
        return 0

    (run / PIPELINE_DIR).mkdir(parents=True, exist_ok=True)
    if cfg.profile == "cpu":
        (run / PIPELINE_DIR / "policy_config.yaml").write_text(yaml.safe_dump(CPU_POLICY))
    t_start = time.perf_counter()
    for name, state in plan:
        if name == "report" or not state.startswith("to run"):
            continue
        command, stage_cfg = stages[name]
        config_file = run / PIPELINE_DIR / f"{name}.yaml"
        config_file.write_text(stage_cfg.to_yaml())
        (run / PIPELINE_DIR / f"{name}.done.json").unlink(missing_ok=True)  # not done until it finishes again
        print(f"\n=== pipeline stage {name}: world-env {command} --config {config_file}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "world_env_training.cli", command, "--config", str(config_file)])
        seconds = time.perf_counter() - t0
        if code != 0:
            print(f"world-env pipeline: stage {name} failed (exit {code}) after {seconds:.0f} s; fix the cause "
                  f"and run the same command again: finished stages are skipped, this one resumes",
                  file=sys.stderr)
            return code
        record = {"config": stage_cfg.to_dict(), "pretrained": source, "seconds": seconds,
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        (run / PIPELINE_DIR / f"{name}.done.json").write_text(json.dumps(record, indent=1))
        print(f"=== pipeline stage {name}: done in {seconds / 60:.1f} min", flush=True)

    from world_env_training.report import write_report

    path = write_report(cfg, stages, artifacts(cfg))
    print(f"\nworld-env pipeline: finished in {(time.perf_counter() - t_start) / 60:.1f} min; report: {path}")
    return 0
