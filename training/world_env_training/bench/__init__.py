"""``world-env bench``: figures measured on this machine, printed and optionally saved.

Each benchmark returns a dict of figures and a one-paragraph report; benchmarks of stages
not built yet say which issue builds them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from world_env_training.configs import BenchConfig


def _robot(cfg: BenchConfig):
    from world_env_training.eval.robot_check import check_robot_against_libero, format_report

    result = check_robot_against_libero(n_configs=cfg.samples, seed=cfg.seed)
    return result, format_report(result)


def _camera(cfg: BenchConfig):
    from world_env_training.eval.camera_check import check_projection_against_libero, format_report

    result = check_projection_against_libero(n_poses=cfg.samples, resolution=128, seed=cfg.seed)
    return result, format_report(result)


def _libero(cfg: BenchConfig):
    from world_env_training.bench.libero import bench_libero, format_report

    result = bench_libero(resolution=128, seed=cfg.seed)
    return result, format_report(result)


def _policy(cfg: BenchConfig):
    from world_env_training.models.backbones import resolve_device
    from world_env_training.bench.policy import bench_policy, format_report

    result = bench_policy(seed=cfg.seed, device=resolve_device(cfg.device))
    return result, format_report(result)


def _reflector(cfg: BenchConfig):
    from world_env_training.models.backbones import resolve_device
    from world_env_training.bench.reflector import bench_reflector, format_report

    result = bench_reflector(seed=cfg.seed, device=resolve_device(cfg.device))
    return result, format_report(result)


def _world_model(cfg: BenchConfig):
    from world_env_training.models.backbones import resolve_device
    from world_env_training.bench.world_model import bench_world_model, format_report

    result = bench_world_model(cfg.world_model, device=resolve_device(cfg.device), seed=cfg.seed)
    return result, format_report(result)


def _loop(cfg: BenchConfig):
    from world_env_training.bench.loop import bench_loop, format_report

    result = bench_loop(seed=cfg.seed)
    return result, format_report(result)


def _imagination(cfg: BenchConfig):
    from world_env_training.models.backbones import resolve_device
    from world_env_training.bench.imagination import bench_imagination, format_report
    from world_env_training.models.precision import resolve_precision

    device = resolve_device(cfg.device)
    budget = (dict(batch_sizes=(2, 4), steps=0, libero_steps=5, matmul_size=512) if cfg.quick
              else dict(batch_sizes=tuple(cfg.batch_sizes), steps=cfg.imagination_steps))
    result = bench_imagination(cfg.policy, cfg.reflector, cfg.world_model, sampler_steps=cfg.sampler_steps,
                               precision=resolve_precision(cfg.precision, device), channels_last=cfg.channels_last,
                               reflector_every=cfg.reflector_every, seed=cfg.seed, device=device, **budget)
    return result, format_report(result)


def _physics(cfg: BenchConfig):
    from world_env_training.bench.physics import bench_physics, format_report
    from world_env_training.rl.arm_physics import resolve_workers

    result = bench_physics(workers=sorted({1, resolve_workers(0)}), batch_size=4 if cfg.quick else 16,
                           chunks=1 if cfg.quick else 4, seed=cfg.seed)
    return result, format_report(result)


BENCHES = {"loop": _loop, "robot": _robot, "camera": _camera, "libero": _libero, "policy": _policy,
           "reflector": _reflector, "world_model": _world_model, "imagination": _imagination, "physics": _physics}
NOT_BUILT: dict[str, int] = {}  # benchmark -> issue that builds it, while unbuilt


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def run(cfg: BenchConfig) -> int:
    items = list(BENCHES) if "all" in cfg.what else cfg.what
    unbuilt = [item for item in items if item in NOT_BUILT]
    if unbuilt:
        names = ", ".join(f"{item} (issue {NOT_BUILT[item]})" for item in unbuilt)
        print(f"world-env bench: not built yet: {names}", file=sys.stderr)
        return 3
    figures = {}
    for item in items:
        result, text = BENCHES[item](cfg)
        figures[item] = result
        print(text, flush=True)
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(json.dumps(figures, indent=2, default=_jsonable))
        print(f"figures written to {cfg.output}")
    return 0
