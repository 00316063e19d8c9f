"""Grounding probe (results/grounding/README.md; not part of the package): where imagination
leaves reality, by what supplies the imagined robot state.

For each held-out init state the SFT policy (chunk means) runs closed loop in imagination
(ImaginedEnv, the world model's own conditions) until the reflector fires or 280 steps; its actions
are then replayed open loop in LIBERO. Modes, i.e. where the imagined state comes from after each
chunk:
  gains        the world model's fitted tracking gains (ImaginedEnv as LOOP runs it by default)
  physics      a second LIBERO scene of the task, movable objects made non-colliding (what
               ArmPhysics packages; this probe's scene starts with LIBERO's true settling velocity)
  physics_est  as physics, the gripper width raised to what a CNN reads off the imagined frame
               (width_estimator.py; the larger of the two)
  oracle       LIBERO itself stepped with the same actions (objects and contacts included): the
               true robot state, a diagnostic of the frames and the reflector given the right state
Printed per chunk end: the end-effector distance imagined vs replayed (cm) and the gripper widths.

    python results/grounding/probe.py runs/default/sft runs/wm_arm8_long_pkg24 runs/reflector_ae MODE 5 6 7
"""
import sys
import time
import numpy as np
import torch
from world_env_common.camera import CameraModel
from world_env_common.robot import PandaModel
from world_env_libero.env import LiberoEnv
from world_env_training.models.reflector import Reflector
from world_env_training.models.vla import VLAPolicy
from world_env_training.models.world_model import WorldModel
from world_env_training.rl.arm_physics import movable_object_geoms
from world_env_training.rl.imagined_env import ImaginedEnv


import torch.nn as nn
NET = nn.Sequential(nn.Conv2d(3, 32, 5, 2, 2), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
                    nn.Conv2d(64, 64, 3, 2, 1), nn.GELU(), nn.Conv2d(64, 64, 3, 2, 1), nn.GELU(),
                    nn.Flatten(), nn.Linear(64 * 16, 128), nn.GELU(), nn.Linear(128, 1))
WIDTH_NET = "runs/grounding_width_net.pt"  # written by width_estimator.py


def est_width(frame):
    if not getattr(NET, "loaded", False):
        NET.load_state_dict(torch.load(WIDTH_NET))
        NET.eval()
        NET.loaded = True
    with torch.no_grad():
        return float(NET(torch.as_tensor(frame[None]).permute(0, 3, 1, 2).float() / 127.5 - 1)) / 100


MODES = ("gains", "physics", "physics_est", "oracle")


def main():
    policy_path, wm_path, reflector_path, mode, *ids = sys.argv[1:]
    if mode not in MODES:
        raise SystemExit(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    torch.set_num_threads(1)
    policy = VLAPolicy.from_pretrained(policy_path)
    wm = WorldModel.from_pretrained(wm_path)
    reflector = Reflector.from_pretrained(reflector_path)
    k = wm.config.frame_stride
    with LiberoEnv("libero_object", 0, resolution=64, seed=0) as env, \
         LiberoEnv("libero_object", 0, resolution=64, seed=0) as arm:
        for i in map(int, ids):
            obs = env.reset(i)
            arm.reset(i)
            if mode in ("physics", "physics_est"):
                m = arm.raw.sim.model
                gs = movable_object_geoms(m)
                m.geom_contype[gs] = 0
                m.geom_conaffinity[gs] = 0
            imagined = ImaginedEnv(wm, PandaModel(), CameraModel.from_dict(env.camera.to_dict()), seed=0)
            o = imagined.reset(obs["image"][None], obs["state"][None].astype(np.float32), env.instruction,
                               joints0=np.asarray(obs["joint_positions"], np.float32)[None])
            session = reflector.session(1)
            session.reset([env.instruction])
            frames, states, actions, fired = [obs["image"]], [o["state"][0]], [], None
            tphys = 0.0
            for c in range(280 // k):
                mu, _ = policy.predict_action_chunk(o["image"], o["state"], [env.instruction])
                chunk = np.clip(mu[:, :k].cpu().numpy(), -1, 1)
                o = imagined.step(chunk)
                if mode in ("physics", "oracle", "physics_est"):
                    t0 = time.perf_counter()
                    for a in chunk[0]:
                        st, _ = arm.step(a, render=False)
                    tphys += time.perf_counter() - t0
                    if mode == "physics_est":
                        st["state"][6] = max(st["state"][6], est_width(o["image"][0]))
                    imagined.states[0] = st["state"]
                    o["state"][0] = st["state"]
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
            print(f"init {i}: fired at {fired}, replay success at {success}; "
                  f"physics {1000*tphys/max(1,len(actions)):.2f} ms/step; drift cm: "
                  + " ".join(f"{d:.1f}" for d in drift), flush=True)
            print("   gripper imag/real mm: "
                  + " ".join(f"{1000 * states[j][6]:.0f}/{1000 * real[j][6]:.0f}" for j in range(n)), flush=True)


if __name__ == "__main__":
    main()
