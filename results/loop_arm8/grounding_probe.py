"""Probe behind results/loop_arm8/README.md "Where imagination leaves reality" (not part of the
package): how far a policy's imagined trajectory drifts from what LIBERO does with the same actions.

For each held-out init state: the policy (chunk means, no sampling) runs closed loop in imagination
(ImaginedEnv with the world model's own conditions) until the reflector fires or 280 steps; its
actions are replayed open loop in LIBERO. Printed per chunk end: the end-effector distance between
the imagined state and the replayed real one (cm), and the gripper widths.

    python results/loop_arm8/grounding_probe.py runs/default/sft runs/wm_arm8_long_pkg runs/reflector_ae 5 6 7 8 9
"""

import sys

import numpy as np
import torch

from world_env_common.camera import CameraModel
from world_env_common.robot import PandaModel
from world_env_libero.env import LiberoEnv
from world_env_training.models.reflector import Reflector
from world_env_training.models.vla import VLAPolicy
from world_env_training.models.world_model import WorldModel
from world_env_training.rl.imagined_env import ImaginedEnv


def main() -> None:
    policy_path, wm_path, reflector_path, *ids = sys.argv[1:]
    torch.set_num_threads(1)
    policy = VLAPolicy.from_pretrained(policy_path)
    wm = WorldModel.from_pretrained(wm_path)
    reflector = Reflector.from_pretrained(reflector_path)
    k = wm.config.frame_stride
    with LiberoEnv("libero_object", 0, resolution=64, seed=0) as env:
        for i in map(int, ids):
            obs = env.reset(i)
            imagined = ImaginedEnv(wm, PandaModel(), CameraModel.from_dict(env.camera.to_dict()), seed=0)
            o = imagined.reset(obs["image"][None], obs["state"][None].astype(np.float32), env.instruction,
                               joints0=np.asarray(obs["joint_positions"], np.float32)[None])
            session = reflector.session(1)
            session.reset([env.instruction])
            frames, states, actions, fired = [obs["image"]], [o["state"][0]], [], None
            for c in range(280 // k):
                mu, _ = policy.predict_action_chunk(o["image"], o["state"], [env.instruction])
                chunk = np.clip(mu[:, :k].cpu().numpy(), -1, 1)
                o = imagined.step(chunk)
                actions += list(chunk[0])
                frames.append(o["image"][0])
                states.append(o["state"][0])
                _, done = session.score_batch(o["image"])
                if done[0]:
                    fired = (c + 1) * k
                    break
            env.reset(i)
            real, success = [obs["state"]], None
            for t, a in enumerate(actions):
                step, ok = env.step(a, render=False)
                if (t + 1) % k == 0:
                    real.append(step["state"])
                if ok and success is None:
                    success = t + 1
            n = min(len(real), len(states))
            drift = [100 * float(np.linalg.norm(np.asarray(states[j][:3]) - np.asarray(real[j][:3]))) for j in range(n)]
            print(f"init {i}: reflector fired at {fired}, replay success at {success}; ee drift (cm) per chunk: "
                  + " ".join(f"{d:.1f}" for d in drift), flush=True)
            print("   gripper imagined / real (mm): "
                  + " ".join(f"{1000 * states[j][6]:.0f}/{1000 * real[j][6]:.0f}" for j in range(n)), flush=True)


if __name__ == "__main__":
    main()
