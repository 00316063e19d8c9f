"""The ``world-env`` command line: every stage documented, config files equivalent to flags."""

import subprocess
import sys
from dataclasses import fields

import pytest
import yaml

from world_env_training import cli, configs


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "world_env_training.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_top_level_help_lists_every_stage():
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    names = {"collect-demos", "explore", "evaluate", "train-sft", "train-autoencoder", "train-world-model",
             "train-reflector", "evaluate-reflector", "evaluate-world-model", "post-train", "audit-reward-hacking",
             "bag-to-dataset", "pipeline", "bench", "export-lerobot", "import-lerobot"}
    for name in names:
        assert name in out.stdout
    assert set(cli.STAGES) == names


@pytest.mark.parametrize("name", sorted(cli.STAGES))
def test_stage_help_documents_every_option_with_its_default(name):
    out = run_cli(name, "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # help text is wrapped; compare without line breaks
    assert "--config" in text
    for f in fields(cli.STAGES[name].config):
        assert f"--{f.name}" in text, f"{name}: --{f.name} missing from --help"
        default = getattr(cli.STAGES[name].config(), f.name)
        assert f"default: {default}" in text, f"{name}: default of --{f.name} missing from --help"


@pytest.mark.parametrize("name", sorted(cli.STAGES))
def test_every_field_is_documented_in_the_docstring(name):
    doc = cli.STAGES[name].config.__doc__
    for f in fields(cli.STAGES[name].config):
        assert f"    {f.name}: " in doc, f"{name}: field {f.name} has no Args entry"


def test_config_file_is_equivalent_to_flags(tmp_path):
    flags = ["post-train", "--updates", "7", "--clip_eps", "0.2", "--binary_reward", "true",
             "--output_dir", str(tmp_path / "loop")]
    printed = run_cli(*flags, "--print_config")
    assert printed.returncode == 0, printed.stderr
    config_file = tmp_path / "post_train.yaml"
    config_file.write_text(printed.stdout)

    _, from_flags = cli.parse(flags)
    _, from_file = cli.parse(["post-train", "--config", str(config_file)])
    assert from_file == from_flags
    assert from_file.updates == 7 and from_file.clip_eps == 0.2 and from_file.binary_reward is True


def test_flags_after_config_override_it(tmp_path):
    config_file = tmp_path / "sft.yaml"
    config_file.write_text(yaml.safe_dump({"steps": 11, "lora_rank": 8}))
    _, cfg = cli.parse(["train-sft", "--config", str(config_file), "--steps", "12"])
    assert (cfg.steps, cfg.lora_rank) == (12, 8)


def test_list_options_accept_plain_and_bracketed_values():
    _, plain = cli.parse(["collect-demos", "--suites", "libero_goal,libero_10"])
    _, bracketed = cli.parse(["collect-demos", "--suites", "[libero_goal,libero_10]"])
    assert plain.suites == bracketed.suites == ["libero_goal", "libero_10"]


@pytest.mark.parametrize("args, message", [
    (["post-train", "--clip_eps", "1.5"], "clip_eps=1.5"),
    (["post-train", "--rollouts_per_state", "1"], "rollouts_per_state=1"),
    (["collect-demos", "--suites", "libero_91"], "suites='libero_91'"),
    (["collect-demos", "--resolution", "100"], "resolution=100"),
    (["collect-demos", "--init_state_ids", "[60,61]"], "init_state_ids=[60, 61]"),
    (["train-reflector", "--threshold", "0"], "threshold=0.0"),
    (["evaluate", "--protocol", "sometimes"], "protocol='sometimes'"),
    (["export-lerobot", "--video_codec", "mpeg2"], "video_codec='mpeg2'"),
    (["import-lerobot", "--state_kind", "cartesian"], "state_kind='cartesian'"),
    (["bag-to-dataset", "--format", "hdf5"], "format='hdf5'"),
])
def test_bad_values_fail_naming_the_field(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    assert message in out.stderr


def test_bad_config_file_fails_naming_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 10\nnot_an_option: 3\n")
    out = run_cli("train-sft", "--config", str(bad))
    assert out.returncode == 2
    assert "not_an_option" in out.stderr


def test_yaml_round_trip_of_every_config():
    for stage in cli.STAGES.values():
        cfg = stage.config()
        assert stage.config.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_unknown_field_in_from_dict_is_rejected():
    with pytest.raises(ValueError, match="unknown field"):
        configs.TrainSFTConfig.from_dict({"stepz": 3})


def test_pipeline_dry_run_lists_stages_in_order():
    out = run_cli("pipeline", "--dry_run", "true")
    assert out.returncode == 0, out.stderr
    order = ["collect-demos", "train-sft", "explore", "train-autoencoder", "train-world-model", "train-reflector",
             "evaluate-world-model", "post-train", "evaluate-sft", "evaluate-loop", "audit-reward-hacking", "report"]
    positions = [out.stdout.index(f" {name} ") for name in order]
    assert positions == sorted(positions)


def test_every_benchmark_is_built_or_names_its_issue():
    from world_env_training import bench

    assert not set(bench.BENCHES) & set(bench.NOT_BUILT)
    for name in list(bench.BENCHES) + list(bench.NOT_BUILT):
        configs.BenchConfig(what=[name])  # accepted by the config
    with pytest.raises(ValueError):
        configs.BenchConfig(what=["not_a_benchmark"])
    assert set(bench.BENCHES) >= {"robot", "camera", "libero", "policy", "reflector", "world_model"}
