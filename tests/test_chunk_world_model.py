"""Imagination as LOOP reads it (issue 14): the arm action map, chunk-level prediction, the arm's
tracking gains, and a reflector trained on the autoencoder's reconstructions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from world_env_common.action_map import render_action_map, render_arm_map
from world_env_common.pose import axis_angle_to_matrix, rotation_angle
from world_env_common.robot import PandaModel
from world_env_training.models.world_model import WorldModel, WorldModelConfig
from world_env_training.models.world_model.processor_world_model import (
    WorldModelProcessor, chunk_commanded, fit_arm_gains, reached_state,
)

from test_world_model import _camera, _write_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

STATE0 = np.array([-0.2, 0.0, 1.1, np.pi, 0.0, 0.0, 0.08], np.float32)
Q_HOME = np.array([0.0, 0.2, 0.0, -2.0, 0.0, 2.2, 0.8])


@pytest.fixture(scope="module")
def robot():
    return PandaModel()


def test_arm_chain_ends_at_the_end_effector_and_moves_with_the_base(robot):
    chain = robot.chain_points(Q_HOME)
    assert chain.shape == (8, 3)
    np.testing.assert_allclose(chain[-1], robot.fk(Q_HOME)[0], atol=1e-9)
    moved = PandaModel(base_pos=(0.5, -0.1, 0.9))
    np.testing.assert_allclose(moved.chain_points(Q_HOME), chain + [0.5, -0.1, 0.9], atol=1e-9)


def test_arm_map_draws_the_chain_under_the_markers(robot):
    camera = _camera(64)
    base = PandaModel(base_pos=(-0.6, 0.0, 0.9))
    pos, rot = base.fk(Q_HOME)
    markers = render_action_map(pos, rot, 1.0, camera)
    arm = render_arm_map(base.chain_points(Q_HOME), pos, rot, 1.0, camera)
    drawn = markers.any(-1)
    assert drawn.any() and np.array_equal(arm[drawn], markers[drawn])  # markers on top, unchanged
    grey = arm[~drawn]
    chain = grey[grey.any(-1)]
    assert len(chain) > 20 and (chain[:, 0] == chain[:, 1]).all() and (chain[:, 0] == chain[:, 2]).all()
    assert set(np.unique(chain[:, 0])) <= {round(90 + 165 * i / 6) for i in range(7)}
    np.testing.assert_array_equal(arm, render_arm_map(base.chain_points(Q_HOME), pos, rot, 1.0, camera))
    other = render_arm_map(base.chain_points(Q_HOME + 0.4), pos, rot, 1.0, camera)
    assert (other != arm).any()  # the same hand pose, another arm


def test_reached_state_moves_the_gained_fraction(robot):
    action = np.array([1.0, -0.5, 0.2, 0.0, 0.4, 0.6, 1.0], np.float32)
    commanded = robot.commanded_state(STATE0, action).astype(np.float32)
    full = reached_state(STATE0, commanded, 0.02)
    np.testing.assert_allclose(full[:6], commanded[:6], atol=1e-6)  # gains 1: the commanded pose
    part = reached_state(STATE0, commanded, 0.02, (0.25, 0.5))
    np.testing.assert_allclose(part[:3], STATE0[:3] + 0.25 * (commanded[:3] - STATE0[:3]), atol=1e-6)
    r0, rc, rp = (axis_angle_to_matrix(s[3:6]) for s in (STATE0, commanded, part))
    assert rotation_angle(r0, rp) == pytest.approx(0.5 * rotation_angle(r0, rc), rel=1e-4)
    assert rotation_angle(rp, rc) == pytest.approx(0.5 * rotation_angle(r0, rc), rel=1e-4)
    assert part[6] == pytest.approx(0.08 - 0.02)  # the gripper at its rate, whatever the gains


def test_fit_arm_gains_recovers_the_gains_of_the_data(robot):
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(3):
        actions = rng.uniform(-1, 1, (30, 7)).astype(np.float32)
        states = [STATE0]
        for a in actions:
            states.append(reached_state(states[-1], robot.commanded_state(states[-1], a).astype(np.float32), 0.01,
                                        (0.3, 0.15)))
        episodes.append((np.array(states), actions))
    position, rotation = fit_arm_gains(robot, episodes)
    assert position == pytest.approx(0.3, abs=1e-3) and rotation == pytest.approx(0.15, abs=5e-3)


def test_chunk_episodes_step_by_chunks_with_chained_commands(tmp_path, robot):
    from world_env_training.data.dataset import Dataset
    from world_env_training.data.world_model_data import load_episode

    _write_dataset(tmp_path / "d", episodes=1, steps=12)
    dataset = Dataset(tmp_path / "d")
    raw = dataset.load_arrays(0, ["frames", "states", "actions"])
    plain = load_episode(dataset, 0, robot, 64)
    assert len(plain.frames) == 13 and plain.actions.shape == (12, 7)
    ep = load_episode(dataset, 0, robot, 64, frame_stride=5, gains=(0.3, 0.2))
    np.testing.assert_array_equal(ep.frames, raw["frames"][[0, 5, 10, 12]])  # every 5th, and the last
    assert ep.actions.shape == (3, 5, 7) and not ep.actions[2, 2:].any()  # the short last chunk, padded
    np.testing.assert_array_equal(ep.actions[2, :2], raw["actions"][10:12])
    expected = chunk_commanded(robot, raw["states"][5], raw["actions"][5:10], robot.gripper_open_width / 8, (0.3, 0.2))
    np.testing.assert_allclose(ep.commanded[1], expected[0], atol=1e-6)
    assert not np.allclose(ep.commanded[1], load_episode(dataset, 0, robot, 64, frame_stride=5).commanded[1])
    arm = load_episode(dataset, 0, robot, 64, frame_stride=5, arm_map=True, gains=(0.3, 0.2))
    assert (arm.action_maps != ep.action_maps).any() and (arm.action_maps.sum() > ep.action_maps.sum())


def _chunk_env(robot, stride=4, arm=True, gains=(0.3, 0.2)):
    from world_env_training.rl.imagined_env import ImaginedEnv

    torch.manual_seed(0)
    cfg = WorldModelConfig.tiny(frame_stride=stride, arm_map=arm)
    model = WorldModel(cfg, WorldModelProcessor(position_gain=gains[0], rotation_gain=gains[1]))
    return ImaginedEnv(model, robot, _camera(cfg.resolution)), cfg


def test_imagined_env_predicts_one_frame_per_chunk(robot):
    env, cfg = _chunk_env(robot)
    b, r = 3, cfg.resolution
    frames0 = np.random.default_rng(1).integers(0, 256, (b, r, r, 3), dtype=np.uint8)
    states0 = np.tile(STATE0, (b, 1))
    with pytest.raises(ValueError, match="joints0"):
        env.reset(frames0, states0, "pick")
    env.reset(frames0, states0, "pick", joints0=np.tile(Q_HOME, (b, 1)))
    actions = np.random.default_rng(0).uniform(-1, 1, (b, 4, 7)).astype(np.float32)
    obs = env.step(actions)
    assert env.frames == b and obs["t"] == 1  # one prediction for the four actions
    assert obs["images"].shape == (b, 4, r, r, 3)
    for i in range(3):  # the chunk's earlier steps hold the newest frame the episode had
        np.testing.assert_array_equal(obs["images"][:, i], frames0)
    np.testing.assert_array_equal(obs["images"][:, 3], obs["image"])
    for row in range(b):
        _, chained = chunk_commanded(robot, STATE0, actions[row], robot.gripper_open_width / 8, (0.3, 0.2))
        np.testing.assert_allclose(obs["states"][row], chained, atol=1e-6)
    assert not np.allclose(env.joints, Q_HOME)  # the joints followed the commanded pose
    obs = env.step(actions[:, :2])  # a shorter last chunk (a step limit) is one prediction too
    assert env.frames == 2 * b and obs["images"].shape[1] == 2
    env.keep([2, 0])
    assert env.joints.shape == (2, 7) and env.offsets.shape == (2, 3)
    with pytest.raises(ValueError, match="chunks with k <= 4"):
        env.step(np.zeros((2, 5, 7), np.float32))
    with pytest.raises(ValueError, match="chunks with k <= 4"):
        env.step(np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="frame_stride 1"):
        env.step_commanded(np.tile(STATE0, (2, 1)))


def test_imagined_state_advances_by_the_models_gains(robot):
    env, cfg = _chunk_env(robot, stride=1, arm=False, gains=(0.25, 1.0))
    r = cfg.resolution
    env.reset(np.zeros((1, r, r, 3), np.uint8), STATE0[None], "pick")
    action = np.array([[1.0, 0, 0, 0, 0, 0, 0]], np.float32)
    obs = env.step(action)
    assert obs["state"][0, 0] == pytest.approx(STATE0[0] + 0.25 * 0.05, abs=1e-6)
    assert WorldModelProcessor.load  # saved and loaded with the model:
    saved = WorldModelProcessor(position_gain=0.25, rotation_gain=0.1).to_dict()
    assert WorldModelProcessor(**json.loads(json.dumps(saved))).gains == (0.25, 0.1)
    assert WorldModelProcessor().gains == (1.0, 1.0)  # models saved before the gains: the old behaviour


def test_reflector_trains_on_reconstructions_too(tmp_path):
    """With an autoencoder, the reflector's batches read D(E(o)) features for the decoded share of
    samples, and the held-out evaluation scores the reconstructed episodes too."""
    from world_env_training.configs import TrainReflectorConfig
    from world_env_training.data.dataset import DatasetWriter
    from world_env_training.models.reflector import Reflector, ReflectorConfig
    from world_env_training.models.world_model.autoencoder import FrameAutoencoder
    from world_env_training.models.world_model.configuration_world_model import AutoencoderConfig
    from world_env_training.train.train_reflector import FeatureEpisodes, episode_refs, train

    from test_reflector import _episode

    with DatasetWriter(tmp_path / "demos") as writer:
        for seed in range(4):
            writer.append(_episode(seed % 2, 10 + seed % 3, seed=seed))
    with DatasetWriter(tmp_path / "explore") as writer:
        for seed in range(4, 8):
            writer.append(_episode(seed % 2, None, seed=seed))
    torch.manual_seed(0)
    FrameAutoencoder(AutoencoderConfig(resolution=32, latent_channels=4, channels=[32, 32], blocks=[1, 1],
                                       decoder_blocks=[1, 0])).save_pretrained(tmp_path / "ae")
    (tmp_path / "reflector.yaml").write_text("image_size: 32\nvision_grid: 2\nhead_hidden_dim: 32\n")
    cfg = TrainReflectorConfig(demos=str(tmp_path / "demos"), exploration=str(tmp_path / "explore"),
                               output_dir=str(tmp_path / "run"), vision_encoder="tiny_cnn", llm="tiny_llama",
                               llm_layers=0, num_frames=3, reflector_config=str(tmp_path / "reflector.yaml"),
                               steps=4, batch_size=8, warmup_steps=1, save_every=4, eval_every=4, log_every=2,
                               autoencoder=str(tmp_path / "ae"))
    torch.manual_seed(0)
    model = Reflector(ReflectorConfig.tiny(num_frames=3))
    ae = FrameAutoencoder.from_pretrained(tmp_path / "ae")
    data = FeatureEpisodes(model, episode_refs(cfg), autoencoder=ae)
    assert len(data.decoded_features) == len(data.features) == 8
    assert not torch.allclose(data.decoded_features[0], data.features[0])
    idx = model.processor.frame_indices
    real = data.sample(8, 0.5, np.random.default_rng(0), idx, decoded_fraction=0.0)[0]
    decoded = data.sample(8, 0.5, np.random.default_rng(0), idx, decoded_fraction=1.0)[0]
    rng = np.random.default_rng(0)
    n_pos = 4
    picks = np.concatenate([data.positives[rng.integers(0, len(data.positives), n_pos)],
                            data.negatives[rng.integers(0, len(data.negatives), 8 - n_pos)]])
    torch.testing.assert_close(real, torch.stack([data.features[e][idx(int(t))] for e, t in picks]))
    torch.testing.assert_close(decoded, torch.stack([data.decoded_features[e][idx(int(t))] for e, t in picks]))
    _, report = train(cfg)
    assert report["decoded"]["frames"]["frames"] == report["frames"]["frames"] > 0
    assert "reconstructed by the autoencoder" in (tmp_path / "run" / "eval.md").read_text()


def test_action_map_node_core_draws_the_arm_the_simulator_draws():
    """``ActionMapper(arm=True)`` draws the chain at the given joints, as the world simulator's
    arm action map does; without ``arm`` it draws only the markers; the simulator refuses a
    chunk-level model (it steps per control period)."""
    from world_env_common.camera import look_at
    from world_env_common.camera import CameraModel
    from world_env_common.rig import Rig
    from world_env_sim.action_mapper import ActionMapper
    from world_env_sim.simulator import WorldSimulator

    rig = Rig(CameraModel.from_fovy(45.0, 64, 64, look_at((1.2, 0.0, 1.5), (-0.4, 0.0, 1.0))), np.array([-0.6, 0, 0.9]),
              np.array([1.0, 0, 0, 0]))
    fingers = np.array([0.02, -0.02])
    plain, arm = ActionMapper(rig), ActionMapper(rig, arm=True)
    np.testing.assert_array_equal(plain.render(Q_HOME, fingers), plain.render_state(plain.state(Q_HOME, fingers)))
    state = arm.state(Q_HOME, fingers)
    expected = render_arm_map(arm.robot.chain_points(Q_HOME), state[:3], axis_angle_to_matrix(state[3:6]), 0.5,
                              rig.camera)
    np.testing.assert_array_equal(arm.render(Q_HOME, fingers), expected)
    assert (expected != plain.render(Q_HOME, fingers)).any()
    model = WorldModel(WorldModelConfig.tiny(frame_stride=8))
    with pytest.raises(ValueError, match="needs frame_stride 1"):
        WorldSimulator(model, rig.camera, arm.robot)


def test_pipeline_default_trains_the_chunk_model_and_imagines_whole_episodes(tmp_path):
    """The pipeline's world model draws the arm and steps by the policy's chunk; its reflector
    also learns the autoencoder's reconstructions; LOOP and the audit imagine episodes as long as
    the suite's (max_steps 0: LIBERO's limit, resolved from the start states)."""
    from world_env_libero.env import MAX_STEPS
    from world_env_training.configs import AuditConfig, PipelineConfig
    from world_env_training.pipeline import stage_configs
    from world_env_training.rl.loop import StartState
    from world_env_training.rl.loop_runner import suite_step_limit

    stages = stage_configs(PipelineConfig(run_dir=str(tmp_path / "run")))
    world = stages["train-world-model"][1]
    assert world.arm_map and world.frame_stride == 8
    assert stages["train-reflector"][1].autoencoder == str(tmp_path / "run" / "autoencoder")
    assert stages["post-train"][1].max_steps == 0 and stages["audit-reward-hacking"][1].max_steps == 0
    plain = stage_configs(PipelineConfig(run_dir=str(tmp_path / "run"), world_model_frame_stride=1,
                                         world_model_arm_map=False, latent_world_model=False))
    assert plain["train-world-model"][1].frame_stride == 1 and not plain["train-world-model"][1].arm_map
    assert plain["train-reflector"][1].autoencoder == ""
    start = dict(frame=np.zeros((8, 8, 3), np.uint8), state=STATE0, instruction="pick", camera={}, key="k")
    starts = [StartState(**start, suite="libero_object"), StartState(**start, suite="libero_object")]
    assert suite_step_limit(starts, "demos") == MAX_STEPS["libero_object"]
    with pytest.raises(ValueError, match="give max_steps"):
        suite_step_limit(starts + [StartState(**start, suite="libero_10")], "demos")
    AuditConfig(max_steps=0)
    with pytest.raises(ValueError, match="max_steps"):
        AuditConfig(max_steps=-1)
    with pytest.raises(ValueError, match="world_model_frame_stride"):
        PipelineConfig(world_model_frame_stride=0)


def test_train_world_model_fits_the_gains_on_the_demonstrations(tmp_path):
    """Exploration rollouts that push against the scene move less per command than free motion;
    the imagined arm's gains come from the demonstrations (the synthetic ones move exactly as
    commanded: gain 1), not from an exploration set that moves a third as much."""
    import yaml

    from world_env_training.configs import TrainWorldModelConfig
    from world_env_training.data.dataset import Dataset, DatasetWriter, Episode
    from world_env_training.train.train_world_model import train

    from test_world_model import TINY_64

    _write_dataset(tmp_path / "demos")
    source = Dataset(tmp_path / "demos")
    with DatasetWriter(tmp_path / "explore") as writer:
        for i in range(len(source)):
            ep = source[i]
            states = ep.states.copy()
            for t in range(len(ep.actions)):  # a third of each commanded move
                states[t + 1, :3] = states[t, :3] + (ep.states[t + 1, :3] - ep.states[t, :3]) / 3
            writer.append(Episode(frames=ep.frames, actions=ep.actions, states=states,
                                  joint_positions=ep.joint_positions, success=ep.success, instruction=ep.instruction,
                                  suite=ep.suite, task_id=ep.task_id, init_state_id=ep.init_state_id,
                                  camera=ep.camera, source="exploration", seed=100 + i))
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(TINY_64))
    cfg = TrainWorldModelConfig(demos=str(tmp_path / "demos"), exploration=str(tmp_path / "explore"),
                                output_dir=str(tmp_path / "run"), model_config=str(tmp_path / "model.yaml"),
                                memory_frames=2, holdout_per_task=0, steps=1, batch_size=2, save_every=1)
    train(cfg)
    processor = WorldModelProcessor.load(tmp_path / "run" / "checkpoints" / "step_0000001")
    assert processor.position_gain == pytest.approx(1.0, abs=1e-3)
