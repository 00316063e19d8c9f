"""The pipeline's report: ``RUN/report.md`` and its figures in ``RUN/report/``.

Built only from what the stages wrote (evaluation JSON, training logs, metrics), so it can be
rewritten at any time from a finished run folder: ``world-env pipeline`` with every stage
cached writes it again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from world_env_training import configs
from world_env_training.eval.evaluation import PROTOCOLS, split_note
from world_env_training.eval.stats import episode_outcomes, newcombe_interval, paired_newcombe_interval, paired_table
from world_env_training.pretrained import MANIFEST as PRETRAINED_MANIFEST
from world_env_training.pretrained import PIPELINE_STAGES as PRETRAINED_STAGES

PROTOCOL_NAMES = {"gt_termination": "GT termination", "self_termination": "self-termination"}


def _loop_steps(cfg) -> str:
    """LOOP's imagined episode length as text: loop_max_steps, or the suite's LIBERO limit (0)."""
    if cfg.loop_max_steps:
        return str(cfg.loop_max_steps)
    from world_env_libero.env import MAX_STEPS

    limits = {MAX_STEPS.get(s) for s in cfg.suites}
    return f"{limits.pop()} (the suite's limit)" if len(limits) == 1 and None not in limits else "the suites' limit of"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _cell(rate: dict | None) -> str:
    if not rate:
        return "-"
    low, high = rate["ci95"]
    return f"{100 * rate['rate']:.1f} [{100 * low:.0f}, {100 * high:.0f}] ({rate['successes']}/{rate['episodes']})"


SFT_ROW = "SFT"
LOOP_ROW = "World-Env (LOOP in imagination)"
CONTROL_ROW = "control arm (LOOP in LIBERO)"


def success_table(arms: dict[str, dict | None]) -> list[str]:
    """The paper's table: a row per arm ({name: eval.json or None}, SFT_ROW first), a column per
    suite and protocol, then overall; then every other arm's difference from SFT."""
    results = {name: result for name, result in arms.items() if result}
    summaries = {name: result["summary"] for name, result in results.items()}
    if not summaries:
        return ["No evaluation results (the evaluate stages did not run)."]
    any_summary = next(iter(summaries.values()))
    protocols = [p for p in PROTOCOLS if p in any_summary["overall"]]
    suites = list(any_summary["suites"])
    head = ["method"] + [f"{s} ({PROTOCOL_NAMES[p]})" for p in protocols for s in suites]
    if len(suites) > 1:
        head += [f"average ({PROTOCOL_NAMES[p]})" for p in protocols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, summary in summaries.items():
        cells = [_cell(summary["suites"].get(s, {}).get(p)) for p in protocols for s in suites]
        if len(suites) > 1:
            cells += [_cell(summary["overall"].get(p)) for p in protocols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Success % in real LIBERO, Wilson 95% interval in brackets, (successes/episodes)."]
    any_eval = next(iter(results.values()))
    if "init_states" in any_eval:
        split = [{tuple(k.rsplit("/", 1)): v for k, v in any_eval[key].items()}
                 for key in ("init_states", "training_init_states")]
        lines += ["", split_note(*split)]
    sft = results.get(SFT_ROW)
    for name, result in results.items():
        if name == SFT_ROW or sft is None:
            continue
        lines += ["", f"{name} minus SFT, with the 95% interval of the difference (Newcombe's hybrid score method):"]
        for p in protocols:
            a, b = summaries[SFT_ROW]["overall"][p], summaries[name]["overall"][p]
            d, low, high = newcombe_interval(b["successes"], b["episodes"], a["successes"], a["episodes"])
            verdict = ("is above zero: it is better" if low > 0 else "is below zero: it is worse" if high < 0
                       else "includes zero: this many episodes cannot tell the two apart")
            line = (f"- {PROTOCOL_NAMES[p]}: {100 * b['rate']:.1f}% vs SFT {100 * a['rate']:.1f}%, "
                    f"{100 * d:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}]; the interval {verdict}.")
            try:  # both evaluated the same init states: the paired interval uses that
                both, only_arm, only_sft, neither = paired_table(episode_outcomes(result, p),
                                                                 episode_outcomes(sft, p))
            except ValueError:
                lines.append(line)
                continue
            _, low, high = paired_newcombe_interval(both, only_arm, only_sft, neither)
            line += (f" Paired by init state (Newcombe's paired method): [{100 * low:+.1f}, {100 * high:+.1f}]; "
                     f"both succeed on {both}, only this arm on {only_arm}, only SFT on {only_sft}, "
                     f"neither on {neither}.")
            lines.append(line)
    for name, summary in summaries.items():
        ended = summary["overall"].get("self_termination", {}).get("ended")
        if ended:
            lines.append(f"- {name}, self-termination episodes ended by: "
                         + ", ".join(f"{reason} {count}" for reason, count in ended.items()) + ".")
    return lines


def _scalars(tb_dir: Path, prefix: str = "train/loss") -> tuple[list[int], list[float]]:
    """(steps, values) of a tensorboard scalar, read from the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tb_dir.is_dir():
        return [], []
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if prefix not in acc.Tags().get("scalars", []):
        return [], []
    events = acc.Scalars(prefix)
    return [e.step for e in events], [e.value for e in events]


def _loop_metrics(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_curves(run: Path, out: Path, pretrained: bool, control: list[dict]) -> Path:
    """control: the control arm's LOOP metrics (empty: none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loop = _loop_metrics(run / "loop")
    trained = [("SFT loss (L1 + Laplace NLL)", run / "sft" / "tb"),
               ("world model loss (v-prediction MSE)", run / "world_model" / "tb"),
               ("reflector loss (BCE)", run / "reflector" / "tb")]
    # Pretrained: those stages did not run here, so there are no logs to read.
    panels = [(title + " (pretrained)", [], [], "not trained in this run") if pretrained
              else (title, *_scalars(tb), "no data") for title, tb in trained]
    updates = [m["update"] for m in loop]
    panels += [("LOOP: imagined return (mean)", updates, [m["return_mean"] for m in loop], "no data"),
               ("LOOP: reflector fired (share)", updates, [m["fired_rate"] for m in loop], "no data"),
               ("LOOP: approx. KL / clip fraction", updates, [m["approx_kl"] for m in loop], "no data")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (title, xs, ys, empty) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=10)
        if xs:
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3)
        else:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("update" if title.startswith("LOOP") else "step")
        ax.grid(alpha=0.3)
    if control:  # the control arm's return is its real success share
        axes.flat[3].plot([m["update"] for m in control], [m["return_mean"] for m in control], marker="s", ms=3)
        axes.flat[3].legend(["in imagination", "control arm, in LIBERO"], fontsize=8)
    if loop:
        axes.flat[5].plot([m["update"] for m in loop], [m["clip_fraction"] for m in loop], marker="s", ms=3)
        axes.flat[5].legend(["approx. KL", "clip fraction"], fontsize=8)
    fig.tight_layout()
    path = out / "training_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def success_plot(arms: dict[str, dict | None], out: Path) -> Path | None:
    results = {name: result for name, result in arms.items() if result}
    if len(results) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = [p for p in PROTOCOLS if p in next(iter(results.values()))["summary"]["overall"]]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    width = 0.8 / len(results)
    for i, (name, result) in enumerate(results.items()):
        rates = [result["summary"]["overall"][p] for p in protocols]
        x = np.arange(len(protocols)) + (i - (len(results) - 1) / 2) * width
        y = np.array([100 * r["rate"] for r in rates])
        err = np.array([[y[j] - 100 * r["ci95"][0], 100 * r["ci95"][1] - y[j]] for j, r in enumerate(rates)]).T
        ax.bar(x, y, width, yerr=err, capsize=4, label=name)
    ax.set_xticks(np.arange(len(protocols)), [PROTOCOL_NAMES[p] for p in protocols])
    ax.set_ylabel("success % (95% CI)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "success.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(cfg: configs.PipelineConfig, stages: dict, made: dict) -> Path:
    """made: where the training stages' outputs are (``pipeline.artifacts``)."""
    run = Path(cfg.run_dir)
    out = run / "report"
    out.mkdir(parents=True, exist_ok=True)
    arms = {SFT_ROW: _read_json(run / "eval_sft" / "eval.json"), LOOP_ROW: _read_json(run / "eval_loop" / "eval.json")}
    if cfg.control_arm:
        arms[CONTROL_ROW] = _read_json(run / "eval_control" / "eval.json")
    lines = ["# World-Env pipeline report", "",
             f"Run folder `{run}`: suites {', '.join(cfg.suites)}"
             + (f", task ids {cfg.task_ids}" if cfg.task_ids else ", all tasks")
             + f", {cfg.demos_per_task} demonstrations per task, {cfg.resolution}x{cfg.resolution}, profile "
             f"`{cfg.profile}`, seed {cfg.seed}. Every figure below was measured in this run.", ""]
    if cfg.pretrained:
        manifest = json.loads((Path(cfg.pretrained) / PRETRAINED_MANIFEST).read_text())
        lines += [f"The training stages did not run: their outputs are the pretrained artifacts in `{cfg.pretrained}` "
                  f"({len(manifest['files'])} files, sha256 verified against its manifest before the stages ran; "
                  "`--pretrained ''` trains them instead). Where each came from:", "",
                  "| artifact | stage | command | commit | note |", "|---|---|---|---|---|"]
        for name, art in manifest["artifacts"].items():
            lines.append(f"| {name} | {art['stage']} | `{art['command']}` | {art['commit']} | {art['note']} |")
        lines.append("")
    lines += ["## Success in real LIBERO: SFT vs post-trained", ""]
    lines += success_table(arms)
    if success_plot(arms, out):
        lines += ["", "![success](report/success.png)"]

    lines += ["", "## Post-training (LOOP in imagination)", ""]
    metrics = _loop_metrics(run / "loop")
    if metrics:
        first, last = metrics[0], metrics[-1]
        lines += [f"{len(metrics)} updates; each {cfg.loop_batch_size} initial states x {cfg.rollouts_per_state} "
                  f"rollouts of at most {_loop_steps(cfg)} imagined steps"
                  + (f" (one predicted frame per chunk of {cfg.world_model_frame_stride})"
                     if cfg.world_model_frame_stride > 1 else "") + ".", "",
                  "| update | return mean | fired | episode length | abs advantage | PPO steps | clip fraction | "
                  "approx. KL | KL that stopped it | scale | imagined frames/s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in metrics:
            stop = m.get("stop_kl")
            lines.append(f"| {m['update']} | {m['return_mean']:.4f} | {m['fired_rate']:.2f} | "
                         f"{m['episode_length']:.1f} | {m['advantage_abs']:.5f} | {m.get('ppo_steps', '-')} | "
                         f"{m['clip_fraction']:.3f} | {m['approx_kl']:.4f} | "
                         + (f"{stop:.2f}" if stop is not None else ("yes" if m.get("kl_stopped") else "-"))
                         + f" | {m['scale']:.4f} | {m['frames_per_s']:.1f} |")
        lines += ["", f"Imagined return went from {first['return_mean']:.3f} to {last['return_mean']:.3f}."]
        strips = sorted((run / "loop" / "strips").glob("update_*.png"))
        for strip in (strips[:1] + strips[-1:]) if len(strips) > 1 else strips:
            shutil.copy(strip, out / f"imagined_{strip.name}")
            lines += ["", f"Imagined episode of {strip.stem.replace('_', ' ')} (first rollout, left to right):",
                      f"![imagined](report/imagined_{strip.name})"]
    else:
        lines.append("No LOOP metrics (the post-train stage did not run).")

    control_policy = Path(stages["evaluate-control"][1].policy)
    control = _loop_metrics(control_policy) if cfg.control_arm else []
    if cfg.control_arm:
        lines += ["", "## Control arm: LOOP in LIBERO", ""]
        if control:
            shipped = control_policy != Path(stages["post-train-libero"][1].output_dir)
            lines += [f"The same LOOP from the same SFT policy with LIBERO as the environment and its success as the "
                      f"reward: {len(control)} updates of {cfg.loop_batch_size} initial states x "
                      f"{cfg.rollouts_per_state} rollouts. Success share of its rollouts per update: "
                      + ", ".join(f"{m['return_mean']:.2f}" for m in control) + "."]
            if shipped:
                lines += ["", f"This policy was not trained in this run: it is the pretrained `{control_policy}` "
                          "(the post-train-libero config it records is the one this run would use; its provenance is "
                          "in the artifact table above). Only its evaluation ran here."]
        else:
            lines.append("No control-arm metrics (the post-train-libero stage did not run).")

    lines += ["", "## Reward hacking: imagined rollouts of the post-trained policy replayed in LIBERO", ""]
    audit_md = run / "audit" / "audit.md"
    lines += ([line for line in audit_md.read_text().splitlines() if not line.startswith("#")]
              if audit_md.is_file() else ["No audit (the audit-reward-hacking stage did not run)."])

    lines += ["", "## World simulator on held-out real episodes", ""]
    wm_report = run / "world_model_eval" / "report.md"
    if wm_report.is_file():
        lines += [line.replace("](", "](world_model_eval/") if line.startswith("![") else line
                  for line in wm_report.read_text().splitlines() if not line.startswith("#")]
        for strip in sorted((run / "world_model_eval").glob("strip_*.png")):
            shutil.copy(strip, out / f"world_model_{strip.name}")
            lines += ["", "Real (top) vs open-loop prediction (bottom):", f"![strip](report/world_model_{strip.name})"]
    else:
        lines.append("No world-model evaluation (the evaluate-world-model stage did not run).")
    autoencoder = _read_json(Path(made["autoencoder_eval"]))
    if autoencoder and autoencoder["held_out"]["frames"]:
        held, sample = autoencoder["held_out"], autoencoder["train_sample"]
        lines += ["", f"Latent world model: its frame autoencoder (step {autoencoder['step']}) reconstructs held-out "
                  f"frames at {held['psnr_mean']:.2f} dB PSNR (5th percentile {held['psnr_p5']:.2f}, "
                  f"{held['frames']} frames; training frames {sample['psnr_mean']:.2f} dB)."]

    lines += ["", "## Instant Reflector on held-out real episodes", ""]
    reflector_md = Path(made["reflector"]) / "eval.md"
    lines += ([line for line in reflector_md.read_text().splitlines() if not line.startswith("#")]
              if reflector_md.is_file() else ["No reflector evaluation (the train-reflector stage did not run)."])

    curves = training_curves(run, out, bool(cfg.pretrained), control)
    lines += ["", "## Training curves", "", f"![curves](report/{curves.name})", "",
              "## Stages", "", "| stage | command | minutes |", "|---|---|---|"]
    total = 0.0
    for name in stages:
        if name in configs.CONTROL_STAGES and not cfg.control_arm:
            continue
        if cfg.pretrained and name in PRETRAINED_STAGES:
            lines.append(f"| {name} | pretrained, from `{cfg.pretrained}` | - |")
            continue
        if name == "post-train-libero" and control_policy != Path(stages[name][1].output_dir):
            lines.append(f"| {name} | pretrained, `{control_policy}` | - |")
            continue
        record = _read_json(run / "pipeline" / f"{name}.done.json")
        minutes = record["seconds"] / 60 if record else None
        total += minutes or 0.0
        lines.append(f"| {name} | `world-env {stages[name][0]} --config {run / 'pipeline' / (name + '.yaml')}` | "
                     + (f"{minutes:.1f}" if minutes is not None else "not run") + " |")
    lines += [f"| **total** | | {total:.1f} |", ""]
    path = run / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
