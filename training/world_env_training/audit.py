"""``world-env audit-reward-hacking``: does the reflector call successes the real simulator denies?

Rollouts of the policy are imagined exactly as LOOP imagines them (``loop.collect_rollouts``:
actions sampled from the policy's Laplace law, episodes ended by the reflector or the step
limit); each rollout's executed actions are then replayed in real LIBERO from the same init
state (``reflector_eval.audit_reward_hacking``). A claimed success that the replay never
reaches is a false success: reward LOOP would have paid for nothing. Writes ``audit.json``
(figures and one row per rollout) and ``audit.md`` in ``output_dir``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from world_env_training.configs import AuditConfig
from world_env_training.dataset import Dataset, DatasetError


def audit(cfg: AuditConfig) -> dict:
    from world_env_common.camera import CameraModel
    from world_env_training.backbones import resolve_device
    from world_env_training.imagined_env import ImaginedEnv
    from world_env_training.loop import collect_rollouts
    from world_env_training.loop_runner import load_start_states
    from world_env_training.reflector import Reflector
    from world_env_training.reflector_eval import ImaginedRollout, audit_reward_hacking, format_audit
    from world_env_training.train_world_model import default_robot
    from world_env_training.vla import VLAPolicy
    from world_env_training.world_model import WorldModel

    from world_env_libero.env import load_triton_before_rendering

    load_triton_before_rendering()  # before the replays create LIBERO renderers
    device = resolve_device(cfg.device)
    dataset = Dataset(cfg.demos)
    starts = load_start_states(cfg.demos)[:cfg.starts or None]
    entries = [dataset.entry(i) for i in range(len(starts))]
    policy = VLAPolicy.from_pretrained(cfg.policy, device=device)
    world_model = WorldModel.from_pretrained(cfg.world_model, device)
    reflector = Reflector.from_pretrained(cfg.reflector, device)
    robot = default_robot()

    def make_env(camera: dict) -> ImaginedEnv:
        return ImaginedEnv(world_model, robot, CameraModel.from_dict(camera), device,
                           sampler_steps=cfg.sampler_steps or None, seed=cfg.seed)

    print(f"audit-reward-hacking: imagining {len(starts)} x {cfg.rollouts_per_state} rollouts of {cfg.policy}",
          flush=True)
    torch.manual_seed(cfg.seed)
    rollouts = collect_rollouts(policy, reflector, make_env, starts, cfg.rollouts_per_state, cfg.max_steps,
                                torch.Generator(device).manual_seed(cfg.seed), keep_episodes=True)
    imagined = []
    for e, (frames, actions) in enumerate(zip(rollouts.episode_frames, rollouts.episode_actions)):
        entry = entries[e // cfg.rollouts_per_state]
        imagined.append(ImaginedRollout(frames=frames, actions=actions, suite=entry["suite"],
                                        task_id=int(entry["task_id"]), init_state_id=int(entry["init_state_id"]),
                                        instruction=entry["instruction"]))
    print(f"audit-reward-hacking: replaying {len(imagined)} rollouts in LIBERO", flush=True)
    result = audit_reward_hacking(reflector, imagined)
    result["imagined_fired"] = int(rollouts.fired.sum())
    result["mean_length"] = float(np.mean(rollouts.lengths))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps({"config": cfg.to_dict(), **result}, indent=1))
    (out / "audit.md").write_text(format_audit(result))
    return result


def run(cfg: AuditConfig) -> int:
    from world_env_training.reflector_eval import format_audit

    try:
        result = audit(cfg)
    except (FileNotFoundError, ValueError, DatasetError) as err:
        print(f"world-env audit-reward-hacking: {err}", file=sys.stderr)
        return 2
    print(format_audit(result))
    return 0
