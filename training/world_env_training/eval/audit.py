"""``world-env audit-reward-hacking``: does the reflector call successes the real simulator denies?

Rollouts of the policy are imagined exactly as LOOP imagines them (``loop.collect_rollouts``:
actions sampled from the policy's Laplace law, episodes ended by the reflector or the step
limit); each rollout's executed actions are then replayed in real LIBERO from the same init
state (``reflector_eval.audit_reward_hacking``). A rollout claims success where the reflector
ended it in imagination, judging every ``reflector_every`` steps as LOOP does; a claimed success
that the replay never reaches is a false success: reward LOOP would have paid for nothing.
Writes ``audit.json`` (figures and one row per rollout) and ``audit.md`` in ``output_dir``.

With ``eval_json`` (an ``evaluate`` result of the same policy) the rollouts start from the init
states that evaluation used (held out from training; their first frames rendered in LIBERO),
and the imagined success rate is reported beside the real one on those states: fidelity as RL
sees it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from world_env_training.configs import AuditConfig
from world_env_training.data.dataset import DatasetError


def held_out_starts(eval_json: str, resolution: int, limit: int = 0):
    """(start states, the evaluation's GT-termination rate, its seed): one start per init state
    an ``evaluate`` run used (the first ``limit``; 0: all), o_0 and s_0 rendered in LIBERO as
    evaluation began them."""
    from world_env_libero.env import LiberoEnv
    from world_env_training.rl.loop import StartState

    path = Path(eval_json)
    if not path.is_file():
        raise FileNotFoundError(f"eval_json={eval_json!r}: no such file")
    data = json.loads(path.read_text())
    if "init_states" not in data:
        raise ValueError(f"{eval_json}: no init_states (written by an evaluate older than held-out evaluation)")
    seed, starts = int(data["config"]["seed"]), []
    for key, ids in data["init_states"].items():
        ids = ids[:max(0, limit - len(starts))] if limit else ids
        if not ids:
            continue
        suite, task = key.rsplit("/", 1)
        with LiberoEnv(suite, int(task), resolution=resolution, seed=seed) as env:
            for i in ids:
                obs = env.reset(i)
                starts.append(StartState(frame=obs["image"], state=obs["state"].astype(np.float32),
                                         instruction=env.instruction, camera=env.camera.to_dict(),
                                         key=f"eval/{key}/{i}", suite=suite, task_id=int(task), init_state_id=int(i),
                                         joints=np.asarray(obs["joint_positions"], np.float32)))
    real = data["summary"]["overall"].get("gt_termination")
    return starts, real, seed


def audit(cfg: AuditConfig) -> dict:
    from world_env_common.camera import CameraModel
    from world_env_training.models.backbones import resolve_device
    from world_env_training.rl.imagined_env import ImaginedEnv
    from world_env_training.rl.loop import collect_rollouts
    from world_env_training.rl.loop_runner import suite_step_limit
    from world_env_training.rl.loop_runner import load_start_states
    from world_env_training.models.reflector import Reflector
    from world_env_training.eval.reflector_eval import ImaginedRollout, audit_reward_hacking, format_audit
    from world_env_common.robot import PandaModel
    from world_env_training.models.vla import VLAPolicy
    from world_env_training.models.world_model import WorldModel

    from world_env_libero.env import load_triton_before_rendering

    load_triton_before_rendering()  # before the replays create LIBERO renderers
    device = resolve_device(cfg.device)
    world_model = WorldModel.from_pretrained(cfg.world_model, device)
    real, env_seed = None, 0  # the demos' first frames were recorded with LIBERO seed 0
    if cfg.eval_json:
        starts, real, env_seed = held_out_starts(cfg.eval_json, world_model.config.resolution, cfg.starts)
    else:
        starts = load_start_states(cfg.demos)
    starts = starts[:cfg.starts or None]
    policy = VLAPolicy.from_pretrained(cfg.policy, device=device)
    reflector = Reflector.from_pretrained(cfg.reflector, device)
    robot = PandaModel()
    physics = None
    if cfg.arm in ("physics", "scene"):
        from world_env_training.rl.arm_physics import ArmPhysics, resolve_workers

        physics = ArmPhysics.for_start_states(starts, cfg.eval_json or cfg.demos, env_seed, objects=cfg.arm == "scene",
                                              workers=resolve_workers(cfg.physics_workers))

    def make_env(camera: dict) -> ImaginedEnv:
        return ImaginedEnv(world_model, robot, CameraModel.from_dict(camera), device,
                           sampler_steps=cfg.sampler_steps or None, seed=cfg.seed, arm_physics=physics)

    print(f"audit-reward-hacking: imagining {len(starts)} x {cfg.rollouts_per_state} rollouts of {cfg.policy}",
          flush=True)
    torch.manual_seed(cfg.seed)
    max_steps = cfg.max_steps or suite_step_limit(starts, cfg.eval_json or cfg.demos)
    rollouts = collect_rollouts(policy, reflector, make_env, starts, cfg.rollouts_per_state, max_steps,
                                torch.Generator(device).manual_seed(cfg.seed), keep_episodes=True,
                                score_every=cfg.reflector_every)
    imagined = []
    for e, (frames, actions) in enumerate(zip(rollouts.episode_frames, rollouts.episode_actions)):
        start = starts[e // cfg.rollouts_per_state]
        # The claim is the one LOOP is paid for: where the reflector ended the imagined episode.
        fired = int(rollouts.lengths.flat[e]) if rollouts.fired.flat[e] else None
        imagined.append(ImaginedRollout(frames=frames, actions=actions, suite=start.suite, task_id=start.task_id,
                                        init_state_id=start.init_state_id, instruction=start.instruction,
                                        judged=(rollouts.rewards[e], fired)))
    print(f"audit-reward-hacking: replaying {len(imagined)} rollouts in LIBERO", flush=True)
    if physics is not None:
        physics.close()
    result = audit_reward_hacking(reflector, imagined, env_seed=env_seed)
    result["imagined_fired"] = int(rollouts.fired.sum())
    result["init_states"] = sorted({s.init_state_id for s in starts})
    result["real_eval"] = real
    result["mean_length"] = float(np.mean(rollouts.lengths))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps({"config": cfg.to_dict(), **result}, indent=1))
    (out / "audit.md").write_text(format_audit(result))
    return result


def run(cfg: AuditConfig) -> int:
    from world_env_training.eval.reflector_eval import format_audit

    try:
        result = audit(cfg)
    except (FileNotFoundError, ValueError, DatasetError) as err:
        print(f"world-env audit-reward-hacking: {err}", file=sys.stderr)
        return 2
    print(format_audit(result))
    return 0
