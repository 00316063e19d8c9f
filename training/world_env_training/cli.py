"""``world-env``: one command with a subcommand per pipeline stage.

Each subcommand's options are generated from its config dataclass (``configs.py``), so
``world-env STAGE --help`` lists every option with its default, ``--config FILE.yaml`` sets
the same options from a file (flags given after it override it), and ``--print_config``
prints the resolved configuration as YAML that ``--config`` accepts back.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, fields

from jsonargparse import ActionConfigFile, ArgumentParser

from world_env_training import configs


@dataclass(frozen=True)
class Stage:
    config: type
    # "module:function" taking the config and returning an exit code; imported only when the
    # stage runs, so --help does not pay for torch.
    runner: str

    def run(self, cfg) -> int:
        module, function = self.runner.split(":")
        return getattr(importlib.import_module(module), function)(cfg)


STAGES: dict[str, Stage] = {
    "collect-demos": Stage(configs.CollectDemosConfig, "world_env_training.data.collect:run_collect_demos"),
    "explore": Stage(configs.ExploreConfig, "world_env_training.data.collect:run_explore"),
    "evaluate": Stage(configs.EvaluateConfig, "world_env_training.eval.evaluation:run"),
    "train-sft": Stage(configs.TrainSFTConfig, "world_env_training.train.train_sft:run"),
    "train-autoencoder": Stage(configs.TrainAutoencoderConfig, "world_env_training.train.train_autoencoder:run"),
    "train-world-model": Stage(configs.TrainWorldModelConfig, "world_env_training.train.train_world_model:run"),
    "train-reflector": Stage(configs.TrainReflectorConfig, "world_env_training.train.train_reflector:run"),
    "evaluate-reflector": Stage(configs.EvaluateReflectorConfig, "world_env_training.eval.reflector_eval:run_evaluate"),
    "post-train": Stage(configs.PostTrainConfig, "world_env_training.rl.post_train:run"),
    "audit-reward-hacking": Stage(configs.AuditConfig, "world_env_training.eval.audit:run"),
    "bag-to-dataset": Stage(configs.BagToDatasetConfig, "world_env_training.data.bag_dataset:run"),
    "export-lerobot": Stage(configs.ExportLeRobotConfig, "world_env_training.data.lerobot_format:run_export"),
    "import-lerobot": Stage(configs.ImportLeRobotConfig, "world_env_training.data.lerobot_format:run_import"),
    "evaluate-world-model": Stage(configs.WorldModelEvalConfig, "world_env_training.eval.world_model_eval:run"),
    "pipeline": Stage(configs.PipelineConfig, "world_env_training.pipeline:run_pipeline"),
    "bench": Stage(configs.BenchConfig, "world_env_training.bench:run"),
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="world-env",
        description="Post-train a VLA policy with reinforcement learning inside a learned world model.",
        default_env=False,
    )
    subcommands = parser.add_subcommands(dest="stage", required=True)
    for name, stage in STAGES.items():
        doc = (stage.config.__doc__ or "").strip().splitlines()[0]
        sub = ArgumentParser(prog=f"world-env {name}", description=doc)
        sub.add_argument("--config", action=ActionConfigFile,
                         help="YAML file setting any of the options below (later flags override it).")
        sub.add_class_arguments(stage.config, nested_key=None, as_group=False)
        subcommands.add_subcommand(name, sub, help=doc)
    return parser


def _bracket_lists(argv: list[str]) -> list[str]:
    """Let list options take ``--suites a,b`` as well as jsonargparse's ``--suites [a,b]``."""
    stage = next((a for a in argv if a in STAGES), None)
    if stage is None:
        return argv
    list_flags = {f"--{f.name}" for f in fields(STAGES[stage].config) if str(f.type).startswith("list")}
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in list_flags and not out[i + 1].startswith(("[", "-")):
            out[i + 1] = f"[{out[i + 1]}]"
    return out


def parse(argv: list[str] | None = None) -> tuple[str, object]:
    """Parse ``argv`` into (stage name, validated config object)."""
    parser = build_parser()
    argv = _bracket_lists(sys.argv[1:] if argv is None else list(argv))
    namespace = parser.parse_args(argv)
    name = namespace.stage
    values = namespace[name].as_dict()
    values.pop("config", None)
    values.pop("__path__", None)
    try:
        cfg = STAGES[name].config.from_dict(values)
    except ValueError as err:
        parser.error(f"{name}: {err}")
    return name, cfg


def main(argv: list[str] | None = None) -> int:
    name, cfg = parse(argv)
    return STAGES[name].run(cfg)


if __name__ == "__main__":
    sys.exit(main())
