"""The latent world model: the frame autoencoder, its training stage, the latent U-Net, its
rollouts, and the fast path's agreement with fp32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_world_model import TINY_64, _camera, _raw_batch, _write_dataset
from world_env_training.models.world_model import (
    AutoencoderConfig, FrameAutoencoder, WorldModel, WorldModelConfig, WorldModelProcessor, make_scheduler,
    predict_next, predict_next_frames,
)
from world_env_training.models.world_model.processor_world_model import (
    DECODED, HISTORY, LATENTS, frames_to_tensor, tensor_to_frames,
)

TINY_AE_16 = dict(resolution=16, latent_channels=4, channels=[32, 32], blocks=[1, 1], decoder_blocks=[1, 0])


def _latent_model(seed: int = 0, latent_residual_std: float = 0.5, latent_frame: str = "decoded") -> WorldModel:
    torch.manual_seed(seed)
    cfg = WorldModelConfig.tiny(latent=True, block_out_channels=[32, 32], latent_frame=latent_frame)
    processor = WorldModelProcessor(residual_std=0.05, latent_residual_std=latent_residual_std)
    return WorldModel(cfg, processor, FrameAutoencoder(AutoencoderConfig(**TINY_AE_16))).eval()


def test_autoencoder_config_is_checked():
    assert AutoencoderConfig().latent_size == 16 and AutoencoderConfig().factor == 4
    with pytest.raises(ValueError, match="channels=.*equal positive widths"):
        AutoencoderConfig(channels=[32, 64, 64])
    with pytest.raises(ValueError, match="decoder_blocks=.*one per level"):
        AutoencoderConfig(decoder_blocks=[1, 1])
    with pytest.raises(ValueError, match="resolution=.*downsampling factor 4"):
        AutoencoderConfig(resolution=66)
    with pytest.raises(ValueError, match="latent.*predict_residual"):
        WorldModelConfig(latent=True, predict_residual=False)
    with pytest.raises(ValueError, match="needs its FrameAutoencoder"):
        WorldModel(WorldModelConfig.tiny(latent=True))
    with pytest.raises(ValueError, match="autoencoder: built for 64px"):
        WorldModel(WorldModelConfig.tiny(latent=True), autoencoder=FrameAutoencoder(AutoencoderConfig()))


def test_decoded_latent_frame_is_the_decoded_prediction():
    """By default the frame is D(z_{t+1}): nothing of o_t's own pixels is pasted in, so a rollout
    does not carry the first frame's detail along; with a zero change it is D(z_t), not o_t."""
    model = _latent_model()
    batch = model.processor(**{k: v for k, v in _raw_batch(model.config, b=3).items() if k != "target"})
    z = model.encode(batch[HISTORY])[:, 0]
    change = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = model.outputs_from_sample(change, batch)
    torch.testing.assert_close(out["frame"], model.decode(z + 0.5 * change).clamp(-1, 1), atol=1e-5, rtol=0)
    still = model.outputs_from_sample(torch.zeros(3, 4, 8, 8), batch)["frame"]
    torch.testing.assert_close(still, model.decode(z).clamp(-1, 1), atol=1e-5, rtol=0)
    assert (still - batch[HISTORY][:, 0]).abs().max() > 0.1  # the composite would give o_t exactly
    with pytest.raises(ValueError, match="latent_frame"):
        WorldModelConfig.tiny(latent=True, latent_frame="sharp")


def test_composite_latent_frame_keeps_unchanged_pixels_exact():
    """``latent_frame="composite"``: a zero latent change reproduces o_t's stored (uint8) frame
    exactly, whatever the decoder's error; a change moves the frame by the decoded difference
    D(z_{t+1}) - D(z_t)."""
    model = _latent_model(latent_frame="composite")
    batch = model.processor(**{k: v for k, v in _raw_batch(model.config, b=3).items() if k != "target"})
    zero = torch.zeros(3, 4, 8, 8)
    out = model.outputs_from_sample(zero, batch)
    assert np.array_equal(tensor_to_frames(out["frame"]), tensor_to_frames(batch[HISTORY][:, 0]))
    assert (model.decode(model.encode(batch[HISTORY][:, 0])) - batch[HISTORY][:, 0]).abs().max() > 0.1
    z = model.encode(batch[HISTORY])[:, 0]
    assert torch.allclose(out["latent"], z)
    change = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    moved = model.outputs_from_sample(change, batch)
    expected = batch[HISTORY][:, 0] + model.decode(z + 0.5 * change) - model.decode(z)
    torch.testing.assert_close(moved["frame"], expected.clamp(-1, 1), atol=1e-5, rtol=0)
    # Passing the cached latents and decoded image (as rollouts do) gives the same prediction.
    cached = {**batch, LATENTS: model.encode(batch[HISTORY]), DECODED: model.decode(z)}
    a = predict_next(model, batch, generator=torch.Generator().manual_seed(1))
    b = predict_next(model, cached, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a["frame"], b["frame"], atol=1e-5, rtol=0)


def test_latent_model_saves_with_its_autoencoder(tmp_path):
    model = _latent_model()
    model.save_pretrained(tmp_path / "wm")
    assert (tmp_path / "wm" / "autoencoder" / "model.safetensors").is_file()
    loaded = WorldModel.from_pretrained(tmp_path / "wm")
    assert loaded.config.latent and loaded.unet.config.sample_size == 8
    assert loaded.unet.config.in_channels == 4 + 3 * 4 + 12  # noisy latent, 3 history latents, folded action map
    batch = model.processor(**{k: v for k, v in _raw_batch(model.config).items() if k != "target"})
    a = predict_next_frames(model, batch, generator=torch.Generator().manual_seed(1))
    b = predict_next_frames(loaded, batch, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    import shutil

    shutil.rmtree(tmp_path / "wm" / "autoencoder")
    with pytest.raises(FileNotFoundError, match="without its autoencoder/ folder"):
        WorldModel.from_pretrained(tmp_path / "wm")


def test_latent_fast_path_agrees_with_fp32():
    """bf16 autocast of the latent path (U-Net, decoder, condition encoders) against fp32 on the same
    noise. Tolerance: at a latent change std of 0.05, mean absolute difference under 0.5 grey
    levels and no pixel more than 6 apart."""
    model = _latent_model(latent_residual_std=0.05)
    raw = _raw_batch(model.config, b=4)
    raw.pop("target")
    batch = model.processor(**raw)
    sched = make_scheduler(model.config, "ddim")
    ref = predict_next_frames(model, batch, sched, 2, torch.Generator().manual_seed(1), "fp32")
    fast = predict_next_frames(model, batch, sched, 2, torch.Generator().manual_seed(1), "bf16")
    assert fast.dtype == torch.float32 and 0 < (fast - ref).abs().max()
    diff = np.abs(tensor_to_frames(fast).astype(int) - tensor_to_frames(ref).astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 6


def test_imagined_env_carries_latents():
    """The latent rollout feeds its own predicted latents back (no re-encoding): the latent memory
    grows with the frames, keep() selects in both, and a step equals predict_next on the same
    latents and noise."""
    from world_env_common.robot import PandaModel
    from world_env_training.rl.imagined_env import ImaginedEnv

    model = _latent_model()
    env = ImaginedEnv(model, PandaModel(), _camera(16), seed=3)
    rng = np.random.default_rng(0)
    frames0 = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    states0 = np.tile(np.array([-0.2, 0.0, 1.1, np.pi, 0.0, 0.0, 0.08], np.float32), (3, 1))
    env.reset(frames0, states0, "pick up the soup")
    torch.testing.assert_close(torch.as_tensor(env.latent_memory.frames[0]), model.encode(frames_to_tensor(frames0)))
    obs = env.step(np.zeros((3, 2, 7), np.float32))
    assert obs["images"].shape == (3, 2, 16, 16, 3)
    assert len(env.latent_memory.frames) == len(env.memory.frames) == 3
    assert not np.allclose(env.latent_memory.frames[2], model.encode(frames_to_tensor(obs["image"])).numpy(), atol=1e-6)
    env.keep([2, 0])
    assert env.latent_memory.frames[-1].shape[0] == 2 and env.decoded.shape[0] == 2
    env.step(np.zeros((2, 7), np.float32))
    assert env.memory.frames[-1].shape == (2, 16, 16, 3)


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    from world_env_training.configs import TrainAutoencoderConfig
    from world_env_training.train.train_autoencoder import run

    root = tmp_path_factory.mktemp("latent")
    _write_dataset(root / "demos", episodes=4, steps=12, init_states=2)
    cfg = TrainAutoencoderConfig(demos=str(root / "demos"), exploration="", output_dir=str(root / "ae"), steps=150,
                                 batch_size=16, lr=3e-3, save_every=50, log_every=10)
    assert run(cfg) == 0
    return root, cfg


def test_train_autoencoder_learns_holds_out_and_resumes(autoencoder_run, capsys):
    from world_env_training.configs import TrainAutoencoderConfig
    from world_env_training.train.train_autoencoder import reconstruction_psnr, run

    root, cfg = autoencoder_run
    report = json.loads((root / "ae" / "eval.json").read_text())
    # Init state 1 (the largest) is held out: episodes 1 and 3, 13 frames each.
    assert report["held_out"]["frames"] == 26 and len(report["held_out_episodes"]) == 2
    empty = reconstruction_psnr(FrameAutoencoder(cfg.autoencoder_config()), np.zeros((0, 64, 64, 3), np.uint8), "cpu")
    assert empty["frames"] == 0
    from world_env_training.data.dataset import Dataset

    held = Dataset(root / "demos").load_arrays(1, ["frames"])["frames"]
    fresh = reconstruction_psnr(FrameAutoencoder(cfg.autoencoder_config()), held, "cpu")["psnr_mean"]
    trained = FrameAutoencoder.from_pretrained(root / "ae")
    assert reconstruction_psnr(trained, held, "cpu")["psnr_mean"] > fresh + 10
    assert report["held_out"]["psnr_mean"] > fresh + 10
    # Resume: the same command with more steps continues from step 150.
    capsys.readouterr()
    assert run(TrainAutoencoderConfig(**{**cfg.to_dict(), "steps": 160})) == 0
    assert "resuming at step 150" in capsys.readouterr().out
    assert json.loads((root / "ae" / "checkpoints" / "latest" / "train_state.json").read_text())["step"] == 160
    with pytest.raises(ValueError, match="another autoencoder configuration"):
        from world_env_training.train.train_autoencoder import train

        train(TrainAutoencoderConfig(**{**cfg.to_dict(), "steps": 170, "latent_channels": 4}))


def test_train_latent_world_model_from_the_autoencoder(autoencoder_run, tmp_path):
    import yaml

    from world_env_training.configs import TrainWorldModelConfig
    from world_env_training.train.train_world_model import run

    root, _ = autoencoder_run
    model_yaml = {**TINY_64, "block_out_channels": [32, 32], "cross_attention_levels": [False, True]}
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(model_yaml))
    cfg = TrainWorldModelConfig(demos=str(root / "demos"), exploration="", output_dir=str(tmp_path / "wm"),
                                model_config=str(tmp_path / "model.yaml"), autoencoder=str(root / "ae"),
                                memory_frames=2, steps=4, batch_size=2, save_every=2, log_every=1)
    assert run(cfg) == 0
    model = WorldModel.from_pretrained(tmp_path / "wm")
    assert model.config.latent and model.autoencoder.config.latent_channels == 8
    assert model.unet.config.sample_size == 16 and 0.001 < model.processor.latent_residual_std < 10
    assert run(TrainWorldModelConfig(**{**cfg.to_dict(), "steps": 6})) == 0
    # Open-loop evaluation rolls the latent model out as ImaginedEnv does.
    from world_env_common.robot import PandaModel
    from world_env_training.data.dataset import Dataset
    from world_env_training.data.world_model_data import load_episode
    from world_env_training.eval.world_model_eval import open_loop

    episode = load_episode(Dataset(root / "demos"), 1, PandaModel(), 64)
    result = open_loop(WorldModel.from_pretrained(tmp_path / "wm"), [episode], horizon=3, starts_per_episode=2)
    assert result["pred"].shape == (2, 3, 64, 64, 3) and np.isfinite(result["psnr"]).all()


def test_rollout_history_feeds_the_models_own_predictions(autoencoder_run, tmp_path):
    """rollout_history_steps: history slots newer than t - k and the current frame come from the
    model's own k-step rollout, older slots and the target stay real; k = 0 is the plain batch;
    a 1-step history is exactly predict_next on the real batch of t - 1; training runs with it."""
    from world_env_common.robot import PandaModel
    from world_env_training.configs import TrainWorldModelConfig
    from world_env_training.data.dataset import Dataset
    from world_env_training.data.world_model_data import load_episode
    from world_env_training.models.world_model.memory_bank import select_memory
    from world_env_training.models.world_model.processor_world_model import TARGET_LATENT
    from world_env_training.train.train_world_model import (
        TransitionSamples, encode_episodes, rollout_history_batch, run, split_latent_keys,
    )

    root, _ = autoencoder_run
    with pytest.raises(ValueError, match="rollout_history_steps=2: expected 0 for a pixel world model"):
        TrainWorldModelConfig(rollout_history_steps=2)
    cfg = TrainWorldModelConfig(demos=str(root / "demos"), exploration="", output_dir=str(tmp_path / "wm"),
                                autoencoder=str(root / "ae"), memory_frames=4, steps=3, batch_size=2, save_every=3,
                                log_every=1, rollout_history_steps=3)
    assert run(cfg) == 0
    model = WorldModel.from_pretrained(tmp_path / "wm")
    memory = (model.config.memory_frames, model.config.memory_recent, model.config.memory_stride)
    episodes = [load_episode(Dataset(root / "demos"), i, PandaModel(), 64) for i in (0, 2)]
    samples = TransitionSamples(episodes, memory, encode_episodes(model.autoencoder, episodes, "cpu"))
    picks = np.array([[0, 9], [1, 6]])

    def real(rows):
        raw, latents = split_latent_keys(samples.gather(rows), "cpu")
        return {**model.processor(**raw, device="cpu"), **latents}

    plain = real(picks)
    same = rollout_history_batch(model, samples, picks, 0, "cpu")
    assert all(torch.equal(same[k], plain[k]) for k in (LATENTS, TARGET_LATENT, HISTORY))

    torch.manual_seed(7)
    ours = rollout_history_batch(model, samples, picks, 3, "cpu")
    assert torch.equal(ours[TARGET_LATENT], plain[TARGET_LATENT])
    for b, (_, t) in enumerate(picks):
        for slot, index in enumerate(select_memory(int(t), *memory)):
            newer = index > t - 3
            assert torch.equal(ours[LATENTS][b, slot], plain[LATENTS][b, slot]) != newer
    assert not torch.equal(ours[HISTORY][:, 0], plain[HISTORY][:, 0])

    # A seeded generator makes the rollout reproducible (what a resumed training run relies on).
    again = [rollout_history_batch(model, samples, picks, 3, "cpu", generator=torch.Generator().manual_seed(5))
             for _ in range(2)]
    assert torch.equal(again[0][LATENTS], again[1][LATENTS]) and not torch.equal(again[0][LATENTS], ours[LATENTS])

    torch.manual_seed(7)
    one = rollout_history_batch(model, samples, picks, 1, "cpu")
    torch.manual_seed(7)
    expected = predict_next(model, real(picks - [0, 1]))
    torch.testing.assert_close(one[LATENTS][:, 0], expected["latent"])
    torch.testing.assert_close(one[HISTORY][:, 0], expected["frame"])

    # The same model's whole-episode replays judged by a reflector (evaluate-world-model --reflector).
    from world_env_training.configs import WorldModelEvalConfig
    from world_env_training.eval.reflector_eval import chunk_end_fire
    from world_env_training.eval.world_model_eval import evaluate, open_loop, replay_judgement
    from world_env_training.models.reflector import Reflector, ReflectorConfig

    torch.manual_seed(0)
    reflector = Reflector(ReflectorConfig.tiny(threshold=0.5)).eval()
    replay = replay_judgement(model, reflector, episodes, [True, False], chunk=4, seed=3)
    for row, ep in zip(replay["rows"], episodes):
        pred = open_loop(model, [ep], len(ep.actions), 1, seed=3)["pred"][0]
        imagined = np.concatenate([ep.frames[:1], pred])
        assert row["length"] == len(ep.actions) and row["key"] == ep.key
        assert row["real_fire"] == chunk_end_fire(reflector.score_episode(ep.frames, ep.instruction), 0.5, 4)
        assert row["imagined_fire"] == chunk_end_fire(reflector.score_episode(imagined, ep.instruction), 0.5, 4)
    assert replay["successes"]["episodes"] == replay["failures"]["episodes"] == 1
    assert replay["successes"]["real_fired"] == int(replay["rows"][0]["real_fire"] is not None)
    reflector.save_pretrained(tmp_path / "reflector")
    metrics = evaluate(WorldModelEvalConfig(checkpoints=[str(tmp_path / "wm")], reflector=str(tmp_path / "reflector"),
                                            max_episodes=0, horizon=3, starts_per_episode=1,
                                            output_dir=str(tmp_path / "eval")))
    # The synthetic demos are all expert episodes, so LIBERO's label is success for each.
    assert (metrics["wm"]["replay"]["successes"]["episodes"] == 2
            and metrics["wm"]["replay"]["failures"]["episodes"] == 0)
    assert "Whole episodes replayed open loop" in (tmp_path / "eval" / "report.md").read_text()
    # Action sensitivity: the same conditions and noise give the same frame (change 0); the
    # commanded state of 3 steps later changes the prediction; a shift past every episode: None.
    from world_env_training.eval.world_model_eval import action_sensitivity

    assert action_sensitivity(model, episodes, shift=0, stride=2)["predicted_change"] == 0.0
    moved = action_sensitivity(model, episodes, shift=3, stride=2)
    assert moved["transitions"] == sum(len(range(0, len(ep.actions) - 3, 2)) for ep in episodes)
    assert moved["predicted_change"] > 0 and moved["real_change"] > 0
    assert action_sensitivity(model, episodes, shift=50) is None
    # The report's default shift (24) is longer than these 12-step episodes: reported as n/a.
    assert metrics["wm"]["action_sensitivity"] is None
    assert "n/a: every episode is shorter than the shift" in (tmp_path / "eval" / "report.md").read_text()
