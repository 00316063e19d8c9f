"""World model (issue 5, ROS-free core): model, memory bank, training, imagined env, metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from world_env_common.camera import CameraModel, look_at
from world_env_training.models.world_model import WorldModel, WorldModelConfig, make_scheduler, predict_next_frames
from world_env_training.models.world_model.memory_bank import MemoryBank, select_memory
from world_env_training.models.world_model.processor_world_model import (
    ACTION_MAP, GEOMETRY, HISTORY, STATE, WorldModelProcessor, geometry_map,
)
from world_env_training.data.world_model_data import split_episodes
from world_env_training.eval.world_model_eval import (
    MOTION_THRESHOLD, copy_last_one_step, copy_last_open_loop, motion_psnr, psnr, ssim,
)

# A 64x64 model small enough for CPU tests (attention only at 16x16).
TINY_64 = {"block_out_channels": [32, 32, 32], "cross_attention_levels": [False, False, True],
           "attention_heads": 2, "cross_attention_dim": 32, "semantic_encoder": "tiny_cnn",
           "semantic_image_size": 32, "semantic_grid": 2, "geometry_grid": 2, "num_train_timesteps": 100,
           "memory_recent": 1, "memory_stride": 2}


def _camera(size: int) -> CameraModel:
    return CameraModel.from_fovy(45.0, size, size, look_at((0.6, 0.0, 1.4), (-0.1, 0.0, 0.9)))


def _raw_batch(cfg: WorldModelConfig, b: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    r, k = cfg.resolution, cfg.memory_frames
    return {"history": rng.integers(0, 256, (b, k, r, r, 3), dtype=np.uint8),
            "action_map": rng.integers(0, 256, (b, r, r, 3), dtype=np.uint8),
            "state": rng.normal(size=(b, 7)).astype(np.float32),
            "commanded": rng.normal(size=(b, 7)).astype(np.float32),
            "geometry": np.broadcast_to(geometry_map(_camera(r)), (b, 10, r, r)).copy(),
            "target": rng.integers(0, 256, (b, r, r, 3), dtype=np.uint8)}


def _write_dataset(path: Path, episodes: int = 3, steps: int = 12, size: int = 64, init_states: int = 2) -> None:
    """A synthetic dataset: a bright square that moves with the end effector; episode e starts
    from init state e % init_states."""
    from world_env_training.data.dataset import DatasetWriter, Episode

    camera = _camera(size)
    rng = np.random.default_rng(0)
    with DatasetWriter(path) as writer:
        for e in range(episodes):
            actions = rng.uniform(-0.5, 0.5, (steps, 7)).astype(np.float32)
            states = np.zeros((steps + 1, 7), np.float32)
            states[0] = [-0.2, 0.0, 1.1, np.pi, 0.0, 0.0, 0.08]
            for t in range(steps):
                states[t + 1] = states[t]
                states[t + 1, :3] += 0.05 * actions[t, :3]
            frames = np.full((steps + 1, size, size, 3), 40, np.uint8)
            for t in range(steps + 1):
                uv = camera.project(states[t, :3][None])[0][0]
                u, v = np.clip(np.round(uv).astype(int), 4, size - 5)
                frames[t, v - 4:v + 4, u - 4:u + 4] = 230
            writer.append(Episode(frames=frames, actions=actions, states=states,
                                  joint_positions=np.zeros((steps + 1, 7), np.float32),
                                  success=np.zeros(steps + 1, np.uint8), instruction="move the square",
                                  suite="libero_object", task_id=0, init_state_id=e % init_states,
                                  camera=camera.to_dict(), source="expert", seed=e))


# --- memory bank ------------------------------------------------------------------------------

def test_memory_bank_selection():
    assert select_memory(10, 4, 2, 3) == [10, 9, 6, 0]        # recent 2, one strided, first
    assert select_memory(20, 5, 2, 4) == [20, 19, 15, 11, 0]
    assert select_memory(0, 4, 2, 3) == [0, 0, 0, 0]           # early: clamped to o_0
    assert select_memory(2, 4, 2, 3) == [2, 1, 0, 0]
    assert select_memory(7, 3, 3, 5) == [7, 6, 5]              # all recent: no first-frame slot
    assert select_memory(7, 1, 1, 1) == [7]
    with pytest.raises(ValueError):
        select_memory(3, 2, 3, 1)
    bank = MemoryBank(3, 1, 2)
    frames = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1, 1) * np.ones((6, 2, 4, 4, 3), np.uint8)
    bank.reset(frames[0])
    for f in frames[1:]:
        bank.add(f)
    history = bank.history()
    assert history.shape == (2, 3, 4, 4, 3)
    assert [int(history[0, k, 0, 0, 0]) for k in range(3)] == select_memory(5, 3, 1, 2) == [5, 3, 0]


# --- model ------------------------------------------------------------------------------------

def test_build_save_load_round_trip(tmp_path):
    cfg = WorldModelConfig.tiny()
    torch.manual_seed(0)
    model = WorldModel(cfg, WorldModelProcessor.fit(np.random.default_rng(0).normal(size=(50, 7)))).eval()
    raw = _raw_batch(cfg)
    batch = model.processor(**raw)
    model.save_pretrained(tmp_path / "wm")
    assert {p.name for p in (tmp_path / "wm").iterdir()} >= {"config.json", "model.safetensors", "processor.json"}
    loaded = WorldModel.from_pretrained(tmp_path / "wm")
    assert loaded.config == cfg
    batch2 = loaded.processor(**raw)
    torch.testing.assert_close(batch2[STATE], batch[STATE], rtol=0, atol=0)
    a = predict_next_frames(model, batch, generator=torch.Generator().manual_seed(1))
    b = predict_next_frames(loaded, batch2, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, cfg.resolution, cfg.resolution)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_residual_is_diffused_at_unit_variance(tmp_path):
    rng = np.random.default_rng(0)
    # Two episodes whose frames change by +-3 grey levels at a tenth of the pixels.
    frames = []
    for _ in range(2):
        f = np.full((6, 8, 8, 3), 100, np.uint8)
        f[1::2] += (3 * (rng.random((3, 8, 8, 3)) < 0.1)).astype(np.uint8)
        frames.append(f)
    changes = np.concatenate([np.diff(f.astype(np.float64), axis=0).ravel() / 127.5 for f in frames])
    processor = WorldModelProcessor.fit(rng.normal(size=(12, 7)), frames)
    assert processor.residual_std == pytest.approx(changes.std(), rel=1e-6)
    processor.save(tmp_path)
    assert WorldModelProcessor.load(tmp_path).residual_std == pytest.approx(processor.residual_std)

    model = WorldModel(WorldModelConfig.tiny(), processor)
    raw = _raw_batch(model.config)
    batch = processor(**raw)
    x0 = model.clean_target(batch)
    change = batch["target"] - batch[HISTORY][:, 0]
    torch.testing.assert_close(x0, change / processor.residual_std)
    torch.testing.assert_close(model.frame_from_sample(x0, batch), batch["target"])


def test_samplers_swap_through_config():
    cfg = WorldModelConfig.tiny()
    train = make_scheduler(cfg, "ddpm")
    assert train.config.prediction_type == "v_prediction"
    for kind, cls in (("ddim", "DDIMScheduler"), ("dpmsolver", "DPMSolverMultistepScheduler")):
        sampler = make_scheduler(cfg, kind)
        assert type(sampler).__name__ == cls and sampler.config.prediction_type == "v_prediction"
        sampler.set_timesteps(5)
        assert len(sampler.timesteps) == 5


def test_switching_conditioning_paths_changes_inputs():
    base = WorldModelConfig.tiny()
    raw = _raw_batch(base)
    full = WorldModel(base)
    batch = full.processor(**raw)
    pixels, tokens = full.pixel_conditions(batch), full.tokens(batch)
    grid_s, grid_g = base.semantic_grid ** 2, base.geometry_grid ** 2
    assert pixels.shape[1] == 3 * base.memory_frames + 3 and tokens.shape[1] == grid_s + grid_g + 1

    no_map = WorldModel(WorldModelConfig.tiny(action_map=False))
    assert no_map.pixel_conditions(batch).shape[1] == 3 * base.memory_frames
    assert no_map.unet.conv_in.in_channels == 3 + 3 * base.memory_frames
    # The action map's pixels are in the input exactly when the path is on.
    changed = {**batch, ACTION_MAP: -batch[ACTION_MAP]}
    assert not torch.equal(full.pixel_conditions(changed), pixels)
    assert torch.equal(no_map.pixel_conditions(changed), no_map.pixel_conditions(batch))

    no_sem = WorldModel(WorldModelConfig.tiny(semantic_tokens=False))
    assert no_sem.semantic is None and no_sem.tokens(batch).shape[1] == grid_g + 1
    no_geo = WorldModel(WorldModelConfig.tiny(geometry_tokens=False))
    assert no_geo.geometry is None and no_geo.tokens(batch).shape[1] == grid_s
    geo_changed = {**batch, GEOMETRY: batch[GEOMETRY] + 1, STATE: batch[STATE] + 1}
    assert not torch.equal(full.tokens(geo_changed), tokens)
    assert torch.equal(no_geo.tokens(geo_changed), no_geo.tokens(batch))
    sem_changed = {**batch, HISTORY: batch[HISTORY].flip(-1)}
    assert torch.equal(no_sem.tokens(sem_changed), no_sem.tokens(batch))
    neither = WorldModel(WorldModelConfig.tiny(semantic_tokens=False, geometry_tokens=False))
    assert neither.tokens(batch).shape[1] == 1  # the learned null token


def test_vggt_adapter_is_a_real_optional_import():
    import importlib.util

    if importlib.util.find_spec("vggt") is not None:
        pytest.skip("vggt is installed here")
    with pytest.raises(ImportError, match="vggt"):
        WorldModel(WorldModelConfig.tiny(geometry_encoder="vggt", vggt_weights="/nonexistent.pt"))


def test_training_steps_reduce_loss():
    cfg = WorldModelConfig.tiny(history_noise_max=0.0)
    torch.manual_seed(0)
    model = WorldModel(cfg)
    batch = model.processor(**_raw_batch(cfg, b=4))

    def loss() -> float:
        with torch.no_grad():
            return float(model(batch, torch.Generator().manual_seed(123))["loss"])

    before = loss()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=2e-3)
    for step in range(40):
        out = model(batch, torch.Generator().manual_seed(step))["loss"]
        optimizer.zero_grad()
        out.backward()
        optimizer.step()
    assert loss() < 0.7 * before


# --- imagined environment ---------------------------------------------------------------------

def test_imagined_env_shapes_and_state_advance():
    from world_env_common.robot import PandaModel
    from world_env_training.rl.imagined_env import ImaginedEnv

    cfg = WorldModelConfig.tiny()
    robot = PandaModel()
    env = ImaginedEnv(WorldModel(cfg), robot, _camera(cfg.resolution), gripper_steps=4)
    b, r = 3, cfg.resolution
    states0 = np.tile(np.array([-0.2, 0.0, 1.1, np.pi, 0.0, 0.0, 0.08], np.float32), (b, 1))
    obs = env.reset(np.zeros((b, r, r, 3), np.uint8), states0, "pick up the soup")
    assert obs["image"].shape == (b, r, r, 3) and obs["image"].dtype == np.uint8 and obs["t"] == 0
    actions = np.random.default_rng(0).uniform(-1, 1, (b, 7)).astype(np.float32)
    actions[:, 6] = 1.0  # close
    obs = env.step(actions)
    assert obs["image"].shape == (b, r, r, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (b, 7) and obs["t"] == 1
    for i in range(b):
        commanded = robot.commanded_state(states0[i], actions[i])
        np.testing.assert_allclose(obs["state"][i, :6], commanded[:6], atol=1e-6)
    # The gripper converges to the commanded width (0, closed) over gripper_steps steps.
    np.testing.assert_allclose(obs["state"][:, 6], 0.08 - robot.gripper_open_width / 4, atol=1e-6)
    chunk = np.repeat(actions[:, None], 4, 1)
    obs = env.step(chunk)
    assert obs["images"].shape == (b, 4, r, r, 3) and obs["states"].shape == (b, 4, 7) and obs["t"] == 5
    np.testing.assert_allclose(obs["state"][:, 6], 0.0, atol=1e-6)
    assert len(env.memory.frames) == 6


def test_bf16_and_channels_last_agree_with_fp32():
    """The fast path (bf16 autocast, channels_last) against fp32 on the same noise. Tolerance: at
    a residual_std of 0.05 (the std of LIBERO's frame changes, what a trained processor holds),
    every pixel within 1 grey level; channels_last alone within float rounding (1e-4)."""
    cfg = WorldModelConfig.tiny()
    torch.manual_seed(0)
    model = WorldModel(cfg, WorldModelProcessor(residual_std=0.05)).eval()
    raw = _raw_batch(cfg, b=4)
    raw.pop("target")
    batch = model.processor(**raw)
    sched = make_scheduler(cfg, "ddim")

    def sample(precision: str, channels_last: bool) -> torch.Tensor:
        model.use_channels_last(channels_last)
        return predict_next_frames(model, batch, sched, 2, torch.Generator().manual_seed(1), precision)

    from world_env_training.models.world_model.processor_world_model import tensor_to_frames

    ref = sample("fp32", False)
    assert (sample("fp32", True) - ref).abs().max() < 1e-4
    for channels_last in (False, True):
        fast = sample("bf16", channels_last)
        assert fast.dtype == torch.float32 and 0 < (fast - ref).abs().max()  # bf16 did run
        diff = np.abs(tensor_to_frames(fast).astype(int) - tensor_to_frames(ref).astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.1
    with pytest.raises(ValueError, match="precision='fp16'"):
        predict_next_frames(model, batch, sched, 1, precision="fp16")
    # auto is this machine's native one: bf16 only with bf16 instructions, which an AVX2-only CPU
    # lacks (there bf16 is emulated, far slower than fp32).
    from world_env_training.models.precision import resolve_precision

    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert (resolve_precision("bf16", "cpu"), resolve_precision("fp32", "cpu")) == ("bf16", "fp32")
    assert torch.equal(sample("auto", False), sample(resolve_precision("auto", "cpu"), False))


# --- metrics and baseline ---------------------------------------------------------------------

def test_copy_last_baseline_and_metrics():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(copy_last_one_step(frames), frames[:4])
    loop = copy_last_open_loop(frames, 1, 3)
    assert loop.shape == (3, 32, 32, 3) and all(np.array_equal(f, frames[1]) for f in loop)
    assert psnr(frames, frames).tolist() == [100.0] * 5
    np.testing.assert_allclose(psnr(frames[:1] + 1, frames[:1]), [10 * np.log10(255.0 ** 2)], rtol=1e-9)
    np.testing.assert_allclose(ssim(frames, frames), 1.0, atol=1e-9)
    assert ssim(frames[:1], 255 - frames[:1])[0] < 0.1


def test_motion_psnr_scores_only_pixels_that_really_moved():
    last = np.full((2, 16, 16, 3), 100, np.uint8)
    target = last.copy()
    target[0, :4, :4] = 200  # 16 moving pixels in frame 0; frame 1 does not move
    target[0, 8, 8, 0] = 100 + MOTION_THRESHOLD  # a change at the threshold does not count
    pred = target.copy()
    pred[0, 10:, 10:] = 0  # errors on static pixels only: invisible to motion PSNR
    value = motion_psnr(pred, target, last)
    assert value[0] == 100.0 and np.isnan(value[1])
    assert psnr(pred, target)[0] < 20  # while full-frame PSNR sees them
    # Copy-last on the moving pixels: error 100 on every channel of the 16 pixels.
    np.testing.assert_allclose(motion_psnr(last, target, last)[0], 10 * np.log10(255.0 ** 2 / 100.0 ** 2))
    pred[0, 0, 0] = 0  # one moving pixel wrong by 200 in every channel: MSE (15 * 0 + 200^2) / 16
    np.testing.assert_allclose(motion_psnr(pred, target, last)[0], 10 * np.log10(255.0 ** 2 * 16 / 200.0 ** 2))


# --- training script --------------------------------------------------------------------------

def test_split_holds_out_init_states(tmp_path):
    from world_env_training.data.dataset import Dataset

    _write_dataset(tmp_path / "demos", episodes=4, steps=3)
    train, held = split_episodes([Dataset(tmp_path / "demos")], 1)
    assert [i for _, i in held] == [1, 3] and [i for _, i in train] == [0, 2]  # init state 1 held out
    assert split_episodes([Dataset(tmp_path / "demos")], 0)[1] == []


def test_more_evaluation_episodes_leave_out_training_init_states(tmp_path):
    import json

    from world_env_training.data.dataset import Dataset
    from world_env_training.eval.world_model_eval import held_out_episodes

    _write_dataset(tmp_path / "demos", episodes=4, steps=3)
    _write_dataset(tmp_path / "more", episodes=3, steps=3, init_states=3)
    train, held = split_episodes([Dataset(tmp_path / "demos")], 1)
    holdout = tmp_path / "holdout.json"
    holdout.write_text(json.dumps({"datasets": [str(tmp_path / "demos")],
                                   "held_out": [{"dataset": d, "index": i} for d, i in held],
                                   "train": [{"dataset": d, "index": i} for d, i in train]}))
    episodes = held_out_episodes(holdout, 64, 0, str(tmp_path / "more"))
    # Training starts only from init state 0: the extra episodes from init states 1 and 2 join,
    # except episode 1, a second recording of held-out demo 1 (same key and seed).
    more = Dataset(tmp_path / "more")
    assert (more.entry(1)["key"], more.entry(1)["seed"]) == (Dataset(tmp_path / "demos").entry(1)["key"], 1)
    assert [ep.key for ep in episodes] == [Dataset(tmp_path / "demos").entry(i)["key"] for _, i in held] + [
        more.entry(2)["key"]]
    assert len(held_out_episodes(holdout, 64, 3, str(tmp_path / "more"))) == 3
    # The same folder given twice adds its episodes once.
    twice = held_out_episodes(holdout, 64, 0, f"{tmp_path / 'more'},{tmp_path / 'more'}")
    assert [ep.key for ep in twice] == [ep.key for ep in episodes]


def test_train_kill_and_resume(tmp_path):
    import yaml

    _write_dataset(tmp_path / "demos")
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(TINY_64))
    run_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys
        from world_env_training.configs import TrainWorldModelConfig
        from world_env_training.train.train_world_model import run
        sys.exit(run(TrainWorldModelConfig(demos={str(tmp_path / 'demos')!r}, exploration="",
            output_dir={str(run_dir)!r}, model_config={str(tmp_path / 'model.yaml')!r}, memory_frames=2,
            steps=int(sys.argv[1]), batch_size=2, save_every=1, keep_checkpoints=0, log_every=1)))
        """)
    proc = subprocess.Popen([sys.executable, "-c", script, "1000"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (run_dir / "checkpoints" / "step_0000002").is_dir():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    from world_env_training.checkpoints import checkpoint_steps

    killed_at = checkpoint_steps(run_dir)[-1]
    assert killed_at >= 2
    done = subprocess.run([sys.executable, "-c", script, str(killed_at + 2)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming at step {killed_at}" in done.stdout
    steps = checkpoint_steps(run_dir)
    assert steps[-1] == killed_at + 2 and all(s in steps for s in range(1, killed_at + 1))
    model = WorldModel.from_pretrained(run_dir)
    assert model.config.memory_frames == 2
    assert (run_dir / "holdout.json").is_file()

    # The trained run is what `world-env bench --what world_model --world_model RUN` measures.
    from world_env_training.bench.world_model import bench_world_model, format_report

    figures = bench_world_model(str(run_dir), batch_sizes=(1, 2), sampler_steps=2, steps=1, libero=False,
                                psnr_sampler_steps=(1, 3), psnr_max_episodes=1, psnr_stride=4)
    assert set(figures["imagined"]) == {1, 2} and all(f["frames_per_s"] > 0 for f in figures["imagined"].values())
    quality = figures["sampler_quality"]
    assert set(quality) == {1, 3} and all(q["frames"] == 3 and 0 < q["psnr"] < 100 for q in quality.values())
    assert "sampler steps   3: one-step PSNR" in format_report(figures)

    # evaluate-world-model reports motion-masked PSNR beside PSNR and SSIM, for the model and copy-last.
    from world_env_training.configs import WorldModelEvalConfig
    from world_env_training.eval.world_model_eval import evaluate

    metrics = evaluate(WorldModelEvalConfig(checkpoints=[f"m={run_dir}"], max_episodes=1, horizon=2,
                                            starts_per_episode=1, one_step_stride=4, sampler_steps=1,
                                            output_dir=str(tmp_path / "eval")))
    one, loop = metrics["m"]["one_step"], metrics["m"]["open_loop"]
    # The synthetic square moves every step, so every frame has moving pixels.
    assert 0 < one["motion_psnr"] < 100 and 0 < one["baseline_motion_psnr"] < one["baseline_psnr"]
    assert len(loop["motion_psnr"]) == 2 and all(0 < v < 100 for v in loop["baseline_motion_psnr"])
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "motion PSNR" in report and "Open-loop motion-masked PSNR" in report
