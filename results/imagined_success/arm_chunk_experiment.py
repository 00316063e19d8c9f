"""Experiment behind results/imagined_success (not part of the package): a world model whose
action map draws the whole arm, and which predicts one frame per chunk of STRIDE steps.

It reuses train-world-model and evaluate-world-model unchanged and only swaps how an episode's
conditions are built (``load_episode``):

- the action map of a step draws the arm's kinematic chain (joint origins 1-7 and the grip site,
  from Pinocchio forward kinematics of the recorded joint positions, placed by the offset between
  the recorded end-effector state and the FK of the base-frame chain) as thick grey polylines,
  brighter towards the hand, with the usual end-effector markers on top;
- with STRIDE > 1 every STRIDE-th frame is one step: its "commanded state" and arm map are those
  the arm really reached STRIDE frames later (the recorded ones, standing in for the chunk's
  commanded end state, which imagination would have to compute by IK).

Usage (from the repository root, after ``. scripts/env.sh``):

    STRIDE=8 python results/imagined_success/arm_chunk_experiment.py train runs/wm_arm8 3000
    STRIDE=8 python results/imagined_success/arm_chunk_experiment.py eval runs/wm_arm8 runs/replay_arm8
    ARM=0 STRIDE=8 ...   # the same with the usual end-effector action map (ablation)
    SAMPLER_STEPS=8 ...  # eval: denoising steps (default: the model's own, 1)
    REFLECTOR=runs/reflector_ae ...  # eval: the reflector that judges the replays
"""

import os
import sys

import cv2
import numpy as np
import pinocchio as pin

import world_env_training.data.world_model_data as W
from world_env_common.action_map import render_action_map
from world_env_common.pose import axis_angle_to_matrix
from world_env_common.robot import PandaModel

ROBOT = PandaModel()
STRIDE = int(os.environ.get("STRIDE", "1"))
ARM = os.environ.get("ARM", "1") == "1"
_load_episode = W.load_episode


def chain_points(q: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(8, 3) world points: joint origins 1..7 and the grip site."""
    model, data = ROBOT.model, ROBOT.data
    pin.forwardKinematics(model, data, np.asarray(q, float))
    pin.updateFramePlacement(model, data, ROBOT.frame_id)
    points = [data.oMi[j].translation.copy() for j in range(1, 8)] + [data.oMf[ROBOT.frame_id].translation.copy()]
    return np.array(points) + offset


def arm_map(q: np.ndarray, state: np.ndarray, camera, opening: float) -> np.ndarray:
    marker = render_action_map(state[:3], axis_angle_to_matrix(state[3:6]), opening, camera)
    if not ARM:
        return marker
    offset = state[:3] - ROBOT._fk_base(q).translation  # LIBERO's base: translated, not rotated
    points = chain_points(q, offset)
    uv, _ = camera.project(points)
    img = np.zeros_like(marker)
    thickness = max(1, round(3 * camera.width / 64))
    for i in range(len(points) - 1):
        grey = int(90 + 165 * i / (len(points) - 2))
        a, b = (tuple(int(round(x * 16)) for x in uv[k]) for k in (i, i + 1))
        cv2.line(img, a, b, (grey, grey, grey), thickness, cv2.LINE_8, 4)
    drawn = marker.any(-1)
    img[drawn] = marker[drawn]
    return img


def load_episode(dataset, index, robot, resolution, *_):  # the package's stride, arm map and gains: not used
    ep = _load_episode(dataset, index, robot, resolution)
    q = dataset.load_arrays(index, ["joint_positions"])["joint_positions"]
    idx = np.arange(0, len(ep.frames), STRIDE)
    if idx[-1] != len(ep.frames) - 1:
        idx = np.append(idx, len(ep.frames) - 1)
    opening = lambda s: float(np.clip(s[6] / robot.gripper_open_width, 0, 1))  # noqa: E731
    maps = np.stack([arm_map(q[i], ep.states[i], ep.camera, opening(ep.states[i])) for i in idx[1:]])
    return W.EpisodeArrays(ep.frames[idx], ep.states[idx], np.zeros((len(idx) - 1, 7), np.float32),
                           ep.states[idx][1:].copy(), maps, ep.geometry, ep.camera, ep.instruction, ep.key)


def main() -> None:
    import world_env_training.train.train_world_model as T
    from world_env_training.configs import TrainWorldModelConfig, WorldModelEvalConfig
    from world_env_training.eval import world_model_eval

    W.load_episode = T.load_episode = load_episode
    what, run = sys.argv[1], sys.argv[2]
    if what == "train":
        sys.exit(T.run(TrainWorldModelConfig(autoencoder="runs/default/autoencoder",
                                             exploration="runs/default/explore,runs/explore_more",
                                             steps=int(sys.argv[3]), save_every=500, output_dir=run)))
    sys.exit(world_model_eval.run(WorldModelEvalConfig(
        checkpoints=[run], more_episodes="runs/term_demos,runs/heldout_explore", max_episodes=0,
        horizon=96 // STRIDE, starts_per_episode=1, one_step_stride=max(1, 8 // STRIDE),
        action_shift=max(1, 24 // STRIDE), reflector=os.environ.get("REFLECTOR", "runs/default/reflector"),
        replay_chunk=max(1, 8 // STRIDE),
        sampler_steps=int(os.environ.get("SAMPLER_STEPS", "0")), output_dir=sys.argv[3])))


if __name__ == "__main__":
    main()
