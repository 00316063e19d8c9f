"""The imagined arm moved by the robot's physics (``ArmPhysics``): in free space it goes where
LIBERO's arm goes under the same actions, each episode of a batch keeps its own state, movable
objects no longer collide, and ``ImaginedEnv`` takes its states from it. With the objects (the
``scene`` oracle) it reproduces a recorded grasp that the object-free arm cannot."""

from __future__ import annotations

import numpy as np
import pytest

from world_env_training.configs import AuditConfig, PostTrainConfig

pytestmark = [pytest.mark.libero, pytest.mark.usefixtures("one_thread")]

UP = np.array([0.0, 0.0, 0.6, 0.0, 0.0, 0.2, -1.0])  # lift and turn, gripper open
CLOSE = np.array([0.3, -0.2, 0.0, 0.0, 0.0, 0.0, 1.0])  # sideways, closing on nothing


@pytest.fixture(scope="module")
def physics():
    from world_env_training.rl.arm_physics import ArmPhysics

    arm = ArmPhysics("libero_object", 0)
    yield arm
    arm.close()


@pytest.fixture(scope="module")
def real():
    """LIBERO's own states from init state 5 (settled until the arm is at rest, as ``ArmPhysics``
    starts) under 8 lifting then 16 closing actions."""
    from world_env_libero.env import LiberoEnv

    with LiberoEnv("libero_object", 0, resolution=64) as env:
        obs = env.reset(5, settle_steps=30)
        states = [env.step(a, render=False)[0]["state"] for a in [UP] * 8 + [CLOSE] * 16]
        return {"joints": obs["joint_positions"], "state": obs["state"], "states": np.array(states)}


def test_free_space_motion_is_libero_s(physics, real):
    physics.reset(real["joints"][None], real["state"][None, 6])
    states = np.concatenate([physics.step(np.tile(a, (1, 8, 1)))[0] for a in (UP, CLOSE, CLOSE)], 1)[0]
    np.testing.assert_allclose(states[:, :3], real["states"][:, :3], atol=2e-4)
    np.testing.assert_allclose(states[:, 6], real["states"][:, 6], atol=1e-3)
    assert states[-1, 6] < 0.01  # the fingers closed on nothing, as LIBERO's did
    assert states[7, 2] - real["state"][2] > 0.03  # it did lift


def test_episodes_keep_their_own_state_and_objects_do_not_collide(physics, real):
    from world_env_training.rl.arm_physics import movable_object_geoms

    joints = np.tile(real["joints"], (2, 1))
    physics.reset(joints, np.full(2, real["state"][6]))
    both, q = physics.step(np.stack([np.tile(UP, (8, 1)), np.tile(CLOSE, (8, 1))]))
    assert q.shape == (2, 7)
    for row, action in enumerate((UP, CLOSE)):
        physics.reset(joints[:1], real["state"][None, 6])
        alone, _ = physics.step(np.tile(action, (1, 8, 1)))
        np.testing.assert_allclose(both[row], alone[0], atol=1e-6)
    physics.reset(joints, np.full(2, real["state"][6]))
    physics.step(np.stack([np.tile(UP, (8, 1)), np.tile(CLOSE, (8, 1))]))
    physics.keep([1])
    after, _ = physics.step(np.tile(CLOSE, (1, 8, 1)))
    physics.reset(joints[:1], real["state"][None, 6])
    expected = physics.step(np.tile(CLOSE, (1, 16, 1)))[0][:, 8:]
    np.testing.assert_allclose(after, expected, atol=1e-6)

    model = physics.sim.model
    off = movable_object_geoms(model)
    names = [model.geom_id2name(int(g)) or "" for g in off]
    assert len(off) > 0 and (model.geom_contype[off] == 0).all() and (model.geom_conaffinity[off] == 0).all()
    assert not any(n.startswith(("robot0_", "gripper0_")) for n in names)
    with pytest.raises(ValueError, match="expected"):
        physics.step(np.zeros((3, 8, 7)))


def test_parallel_scenes_give_the_states_of_one(physics, real):
    """physics_workers: the batch is shared among scenes in spawned processes, and every state,
    after episodes end (keep) too, is bit-identical to one scene's."""
    from world_env_training.rl.arm_physics import ArmPhysics

    rng = np.random.default_rng(0)
    joints = real["joints"] + rng.normal(0.0, 0.02, (5, 7))
    chunks = np.concatenate([np.tile(UP, (5, 4, 1)), np.tile(CLOSE, (5, 4, 1))], 1) + rng.normal(0.0, 0.1, (5, 8, 7))
    shared = ArmPhysics("libero_object", 0, workers=3)
    try:
        assert shared.workers == 3 and all(p.is_alive() for p, _ in shared._peers)
        runs = []
        for arm in (physics, shared):
            arm.reset(joints, np.full(5, real["state"][6]))
            first, _ = arm.step(chunks)
            arm.keep([0, 2, 3])
            second, q = arm.step(chunks[[0, 2, 3]])
            runs.append((first, second, q))
        for one, three in zip(*runs):
            np.testing.assert_array_equal(one, three)
        peers = [p for p, _ in shared._peers]
    finally:
        shared.close()
    assert not any(p.is_alive() for p in peers)
    with pytest.raises(ValueError, match="workers"):
        PostTrainConfig(physics_workers=-1)


def test_imagined_env_states_come_from_the_physics(physics, real):
    from world_env_common.robot import PandaModel
    from world_env_training.models.world_model import WorldModel, WorldModelConfig
    from world_env_training.models.world_model.processor_world_model import WorldModelProcessor
    from world_env_training.rl.imagined_env import ImaginedEnv

    from test_world_model import _camera

    cfg = WorldModelConfig.tiny(frame_stride=8, arm_map=False)
    model = WorldModel(cfg, WorldModelProcessor(position_gain=0.24, rotation_gain=0.08))
    r = cfg.resolution
    frames0 = np.zeros((1, r, r, 3), np.uint8)
    chunk = np.tile(UP, (1, 8, 1)).astype(np.float32)
    gained = ImaginedEnv(model, PandaModel(), _camera(r))
    gained.reset(frames0, real["state"][None], "pick")
    physical = ImaginedEnv(model, PandaModel(), _camera(r), arm_physics=physics)
    with pytest.raises(ValueError, match="joints0"):
        physical.reset(frames0, real["state"][None], "pick")
    physical.reset(frames0, real["state"][None], "pick", joints0=real["joints"][None])
    by_gains, by_physics = gained.step(chunk)["states"], physical.step(chunk)["states"]
    np.testing.assert_allclose(by_physics[0, :, :3], real["states"][:8, :3], atol=2e-4)
    assert np.abs(by_gains[0, :, :3] - by_physics[0, :, :3]).max() > 2e-3  # 10x the tolerance above
    with pytest.raises(ValueError, match="arm_physics"):
        physical.step_commanded(real["state"][None])


def test_the_scene_oracle_holds_the_grasped_object(physics):
    from pathlib import Path

    from world_env_training.data.dataset import Dataset
    from world_env_training.rl.arm_physics import ArmPhysics

    demo = Dataset(Path(__file__).resolve().parents[1] / "pretrained/embedded_default/demos")[0]
    steps = demo.length // 8 * 8
    chunks = demo.actions[:steps].reshape(1, -1, 8, 7)
    closed = demo.actions[:steps, 6] > 0  # the expert's grasp and carry
    recorded = demo.states[1:steps + 1]
    assert closed.sum() > 20 and recorded[closed, 6].min() > 0.05  # LIBERO's fingers stop on the can

    oracle = ArmPhysics("libero_object", 0, objects=True)
    try:
        with pytest.raises(ValueError, match="init_state_ids"):
            oracle.reset(demo.joint_positions[:1], demo.states[:1, 6])
        oracle.reset(demo.joint_positions[:1], demo.states[:1, 6], [demo.init_state_id])
        held = np.concatenate([oracle.step(c[None])[0] for c in chunks[0]], 1)[0]
    finally:
        oracle.close()
    physics.reset(demo.joint_positions[:1], demo.states[:1, 6])
    free = np.concatenate([physics.step(c[None])[0] for c in chunks[0]], 1)[0]
    np.testing.assert_allclose(held[:, 6], recorded[:, 6], atol=1e-3)
    assert np.linalg.norm(held[:, :3] - recorded[:, :3], axis=1).max() < 5e-3
    assert np.median(free[closed, 6]) < 0.01  # without the can the fingers close on nothing


def test_arm_option_is_checked_and_needs_one_task(tmp_path):
    from world_env_training.rl.arm_physics import ArmPhysics
    from world_env_training.rl.loop import StartState
    from world_env_training.rl.post_train import train
    from world_env_training.tiny import write_artifacts

    for config in (PostTrainConfig, AuditConfig):
        assert config().arm == "gains" and config(arm="physics").arm == "physics" and config(arm="scene").arm == "scene"
        with pytest.raises(ValueError, match="arm"):
            config(arm="springs")
    starts = [StartState(frame=np.zeros((8, 8, 3), np.uint8), state=np.zeros(7, np.float32), instruction="x",
                         camera={}, key=str(t), suite="libero_object", task_id=t, init_state_id=0) for t in (0, 1)]
    with pytest.raises(ValueError, match="one LIBERO task"):
        ArmPhysics.for_start_states(starts, "demos")
    paths = write_artifacts(tmp_path / "artifacts")  # start states of three tasks
    cfg = PostTrainConfig(policy=paths["policy"], world_model=paths["world_model"], reflector=paths["reflector"],
                          demos=paths["demos"], output_dir=str(tmp_path / "loop"), rollouts_per_state=2,
                          batch_size=1, updates=1, max_steps=4, arm="physics")
    with pytest.raises(ValueError, match="one LIBERO task"):
        train(cfg)
