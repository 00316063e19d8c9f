"""Instant Reflector: model (range, cache, frozen parts, save/load), training (loss, kill and
resume), evaluation metrics on hand-made cases, and the reward-hacking audit with a stub
simulator. Everything runs on the tiny random config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from world_env_training.bench.reflector import format_report, measure_latency
from world_env_training.checkpoints import checkpoint_steps
from world_env_training.configs import TrainReflectorConfig
from world_env_training.data.dataset import DatasetWriter, Episode
from world_env_training.models.reflector import Reflector, ReflectorConfig
from world_env_training.models.reflector.processor_reflector import sample_frame_indices
from world_env_training.eval.reflector_eval import (
    ImaginedRollout, audit_reward_hacking, auroc, binary_metrics, episode_metrics, evaluate_scores, first_fire,
    format_audit, format_markdown)
from world_env_training.train.train_reflector import split_episodes, train

INSTRUCTIONS = ("put the red block in the box", "put the blue block in the box")


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**overrides) -> Reflector:
    torch.manual_seed(0)
    return Reflector(ReflectorConfig.tiny(**overrides))


def _frames(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _episode(task: int, success_at: int | None, steps: int = 16, seed: int = 0) -> Episode:
    """Grey frames; a bright square appears in the corner from ``success_at`` on."""
    rng = np.random.default_rng(seed)
    frames = np.full((steps + 1, 32, 32, 3), 90, dtype=np.uint8)
    frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
    frames[..., task] += 60
    labels = np.zeros(steps + 1, dtype=np.uint8)
    if success_at is not None:
        frames[success_at:, :12, :12] = 250
        labels[success_at:] = 1
    zeros = np.zeros((steps + 1, 7), np.float32)
    return Episode(frames=frames, actions=np.zeros((steps, 7), np.float32), states=zeros, joint_positions=zeros,
                   success=labels, instruction=INSTRUCTIONS[task], suite="libero_object", task_id=task,
                   init_state_id=seed, camera={}, source="expert" if success_at is not None else "exploration",
                   seed=seed)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reflector_data")
    with DatasetWriter(root / "demos") as writer:
        for seed in range(4):
            writer.append(_episode(seed % 2, 10 + seed % 3, seed=seed))
    with DatasetWriter(root / "explore") as writer:
        for seed in range(4, 10):
            writer.append(_episode(seed % 2, 12 if seed % 3 == 0 else None, seed=seed))
    return root / "demos", root / "explore"


def _cfg(tmp_path: Path, datasets, **overrides) -> TrainReflectorConfig:
    config_file = tmp_path / "reflector.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_file.write_text("image_size: 32\nvision_grid: 2\nhead_hidden_dim: 32\n")
    values = dict(demos=str(datasets[0]), exploration=str(datasets[1]), output_dir=str(tmp_path / "run"),
                  vision_encoder="tiny_cnn", llm="tiny_llama", llm_layers=0, num_frames=3,
                  reflector_config=str(config_file), steps=30, batch_size=8, lr=3e-3, warmup_steps=3,
                  save_every=10, eval_every=10, log_every=5)
    values.update(overrides)
    return TrainReflectorConfig(**values)


# --- model --------------------------------------------------------------------------------------

def test_frame_sampling_always_reads_the_first_and_current_frame():
    assert sample_frame_indices(0, 4) == [0, 0, 0, 0]
    assert sample_frame_indices(1, 4) == [0, 0, 1, 1]
    assert sample_frame_indices(9, 4) == [0, 3, 6, 9]
    assert sample_frame_indices(200, 4) == [0, 67, 133, 200]
    assert sample_frame_indices(7, 1) == [7]


def test_reward_is_a_probability_and_done_follows_the_threshold():
    model = _tiny(threshold=0.3)
    session = model.session(2)
    session.reset(list(INSTRUCTIONS))
    for frames in _frames(10).reshape(5, 2, 32, 32, 3):
        rewards, done = session.score_batch(frames)
        assert rewards.shape == (2,) and ((rewards >= 0) & (rewards <= 1)).all()
        np.testing.assert_array_equal(done, rewards > 0.3)
    rewards = model.score_episode(_frames(12), INSTRUCTIONS[0])
    assert rewards.shape == (12,) and ((rewards >= 0) & (rewards <= 1)).all()


def test_cached_session_scores_equal_uncached_scoring():
    model = _tiny()
    with torch.no_grad():  # a non-trivial head, so equal scores are not equal by accident
        model.head.mlp[-1].weight.normal_(0, 1.0)
    episodes = [_frames(14, seed=1), _frames(14, seed=2)]
    session = model.session(2)
    session.reset(list(INSTRUCTIONS))
    online = np.stack([session.score_batch(np.stack([episodes[0][t], episodes[1][t]]))[0] for t in range(14)], 1)
    for e in range(2):
        uncached = [model.score_uncached(episodes[e][:t + 1], INSTRUCTIONS[e]) for t in range(14)]
        offline = model.score_episode(episodes[e], INSTRUCTIONS[e])
        np.testing.assert_allclose(online[e], uncached, atol=1e-5)
        np.testing.assert_allclose(offline, uncached, atol=1e-5)
    assert len(set(np.round(online[0], 4))) > 3
    # Episodes advance independently: stepping only episode 1 leaves episode 0 where it was.
    session.score_batch(_frames(1, seed=3), episodes=[1])
    assert (session.t(0), session.t(1)) == (13, 14)


def test_judging_at_chunk_ends_encodes_only_the_frames_it_reads():
    """add_batch keeps frames as pixels; a judgement every 8 frames encodes only the M frames it
    reads (fewer than the 8 appended) and scores exactly what per-frame judging scores there."""
    model = _tiny()
    with torch.no_grad():
        model.head.mlp[-1].weight.normal_(0, 1.0)
    frames = _frames(25, seed=4)
    every = model.session(1)
    every.reset(INSTRUCTIONS[0])
    per_frame = [every.score(f)[0] for f in frames]
    encoded = []
    real_encode = model.encode_frames
    model.encode_frames = lambda images, **kw: (encoded.append(len(images)), real_encode(images, **kw))[1]
    chunked = model.session(1)
    chunked.reset(INSTRUCTIONS[0])
    judged = {}
    for t, frame in enumerate(frames):
        if t % 8 == 0:
            judged[t] = chunked.score(frame)[0]
        else:
            chunked.add_batch(frame[None])
    assert chunked.t() == 24 and len(encoded) == 4 and sum(encoded) < 4 * 4 < 25
    np.testing.assert_allclose([judged[t] for t in judged], [per_frame[t] for t in judged], atol=1e-5)


def test_a_batch_scores_each_episode_as_it_would_be_scored_alone():
    model = _tiny()
    frames = _frames(6)
    long_instruction = INSTRUCTIONS[0] + " and then close the lid carefully"
    alone = model.score_episode(frames, long_instruction)
    session = model.session(2)
    session.reset([INSTRUCTIONS[1], long_instruction])  # different lengths: left padding
    together = [session.score_batch(np.stack([frames[t], frames[t]]))[0][1] for t in range(6)]
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_bf16_scoring_agrees_with_fp32():
    """bf16 autocast of the frozen encoder and LLM against fp32, on the same frames. Tolerance:
    frame features and the reward head's input h_t within 2 % (relative L2 norm), R within 0.005."""
    model = _tiny()
    seen = []
    model.head.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    frames = _frames(4 * 3)
    results = {}
    for precision in ("fp32", "bf16"):
        model.set_precision(precision)
        seen.clear()
        session = model.session(3)
        session.reset([INSTRUCTIONS[0]] * 3)
        rewards = np.stack([session.score_batch(frames[3 * t:3 * t + 3])[0] for t in range(4)])
        results[precision] = (model.encode_frames(frames), torch.cat(seen), rewards)
    (f32, h32, r32), (f16, h16, r16) = results["fp32"], results["bf16"]
    assert f16.dtype == torch.float32 and r16.dtype == np.float32
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    assert 0 < rel(f16, f32) < 0.02 and 0 < rel(h16, h32) < 0.02  # > 0: bf16 did run
    np.testing.assert_allclose(r16, r32, atol=0.005)
    with pytest.raises(ValueError, match="precision='int8'"):
        model.set_precision("int8")


def test_only_the_projector_and_head_train():
    model = _tiny()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("projector.", "head.")) for n in trainable)
    assert not any(p.requires_grad for p in model.vision_encoder.parameters())
    assert not any(p.requires_grad for p in model.llm.parameters())
    model.train()
    assert not model.vision_encoder.training and not model.llm.training
    counts = model.parameter_counts()
    assert counts["trainable"] == counts["projector"] + counts["head"]


def test_save_load_round_trip_is_exact(tmp_path):
    model = _tiny()
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    loaded = Reflector.from_pretrained(tmp_path / "model")
    frames = _frames(9)
    np.testing.assert_array_equal(model.score_episode(frames, INSTRUCTIONS[0]),
                                  loaded.score_episode(frames, INSTRUCTIONS[0]))
    assert Reflector.from_pretrained(tmp_path / "model", threshold=0.8).threshold == 0.8


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="threshold"):
        ReflectorConfig.tiny(threshold=1.0)
    with pytest.raises(ValueError, match="num_frames"):
        ReflectorConfig.tiny(num_frames=0)
    with pytest.raises(ValueError, match="positive_fraction"):
        TrainReflectorConfig(positive_fraction=0.0)


# --- metrics --------------------------------------------------------------------------------------

def test_binary_metrics_on_a_hand_made_case():
    scores = [0.9, 0.8, 0.2, 0.7, 0.1, 0.6]
    labels = [1, 1, 1, 0, 0, 0]
    m = binary_metrics(scores, labels, 0.5)  # predicted 1: 0.9 0.8 0.7 0.6 -> tp 2, fp 2, fn 1, tn 1
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 2, 1, 1)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3)) and m["accuracy"] == pytest.approx(0.5)
    none = binary_metrics([0.1, 0.2], [1, 0], 0.5)
    assert none["precision"] is None and none["recall"] == 0.0 and none["f1"] is None


def test_auroc_on_hand_made_cases():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # positives 0.9, 0.2 vs negatives 0.7, 0.1: pairs won 1 + 1 + 0 + 1 of 4
    assert auroc([0.9, 0.2, 0.7, 0.1], [1, 1, 0, 0]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5, 0.5], [1, 0, 0]) == pytest.approx(0.5)  # ties count half
    assert auroc([0.4, 0.6], [1, 1]) is None


def test_firing_step_errors_on_hand_made_episodes():
    eta = 0.5
    rewards = [np.array([0.1, 0.2, 0.6, 0.9, 0.9]),  # success at 3, fires at 2: error -1
               np.array([0.1, 0.1, 0.1, 0.4, 0.7, 0.8]),  # success at 1, fires at 4: error +3
               np.array([0.1, 0.2, 0.3]),  # success at 2, never fires
               np.array([0.1, 0.9, 0.2]),  # failed, fires
               np.array([0.1, 0.1, 0.1])]  # failed, quiet
    labels = [np.array([0, 0, 0, 1, 1]), np.array([0, 1, 1, 1, 1, 1]), np.array([0, 0, 1]),
              np.zeros(3), np.zeros(3)]
    assert first_fire(rewards[0], eta) == 2 and first_fire(rewards[2], eta) is None
    m = episode_metrics(rewards, labels, eta)
    assert m["step_mae"] == pytest.approx(2.0) and m["step_mean_error"] == pytest.approx(1.0)
    assert (m["never_fired_on_success"], m["fired_on_failed"]) == (1, 1)
    assert m["never_fired_on_success_rate"] == pytest.approx(1 / 3) and m["fired_on_failed_rate"] == 0.5
    # Judged every 2 frames (o_0, o_2, o_4): episode 0 still fires at 2, episode 1 at 4; episode 3
    # fired at 1 per frame, and R is back below eta at o_2: the chunk-end judge misses it.
    m2 = episode_metrics(rewards, labels, eta, chunk=2)
    assert [r["chunk_end_fire_step"] for r in m2["per_episode"]] == [2, 4, None, None, None]
    assert (m2["fired"], m2["chunk_end_within_one_chunk"]) == (3, 2)
    report = evaluate_scores(rewards, labels, eta)
    assert report["frames"]["frames"] == 20 and report["frames"]["positives"] == 8
    text = format_markdown(report)
    assert ("| auroc |" in text and "2.0" in text
            and "within one chunk of per-frame judging | 0 / 3 |" in text)  # episodes shorter than a chunk of 8
    json.dumps(report)


# --- training ---------------------------------------------------------------------------------

def test_split_holds_out_whole_episodes_from_every_group():
    refs = [{"source": s, "succeeded": ok} for s, ok in
            [("expert", True)] * 4 + [("exploration", True)] * 2 + [("exploration", False)] * 5 + [("x", False)]]
    train_ids, held = split_episodes(refs, 0.25, seed=0)
    assert sorted(train_ids + held) == list(range(len(refs))) and not set(train_ids) & set(held)
    groups = {(refs[i]["source"], refs[i]["succeeded"]) for i in held}
    assert groups == {("expert", True), ("exploration", True), ("exploration", False)}  # single "x" stays in train
    assert split_episodes(refs, 0.25, seed=0) == (train_ids, held)


def test_bce_training_lowers_the_loss_and_writes_the_evaluation(tmp_path, datasets):
    from world_env_training.train.train_reflector import FeatureEpisodes, episode_refs

    cfg = _cfg(tmp_path, datasets, steps=40)
    torch.manual_seed(0)
    model = Reflector(ReflectorConfig.tiny(num_frames=3))
    data = FeatureEpisodes(model, episode_refs(cfg))
    fixed = data.sample(32, 0.5, np.random.default_rng(0), model.processor.frame_indices)
    batch = model.processor(*fixed)
    with torch.no_grad():
        before = float(model(batch)["loss"])
    newest, report = train(cfg)
    trained = Reflector.from_pretrained(cfg.output_dir)
    with torch.no_grad():
        after = float(trained(trained.processor(*fixed))["loss"])
    assert after < 0.7 * before, (before, after)
    assert newest.name == "step_0000040" and trained.threshold == cfg.threshold
    assert report is not None and (Path(cfg.output_dir) / "eval.md").is_file()
    saved = json.loads((Path(cfg.output_dir) / "eval.json").read_text())
    assert saved["frames"]["frames"] == report["frames"]["frames"] > 0

    # world-env evaluate-reflector on the run: only episodes from scenes it never trained on.
    from world_env_training.configs import EvaluateReflectorConfig
    from world_env_training.eval.reflector_eval import run_evaluate

    trained_keys = json.loads((Path(cfg.output_dir) / "split.json").read_text())["train"]
    seen = {tuple(k.split("/")[1:4]) for k in trained_keys}
    with DatasetWriter(tmp_path / "fresh") as writer:
        for seed in (0, 20, 21):  # init state 0 was trained on; 20 and 21 are new scenes
            writer.append(_episode(seed % 2, 12, seed=seed))
    assert ("libero_object", "0", "0") in seen
    out = tmp_path / "reflector_eval"
    assert run_evaluate(EvaluateReflectorConfig(reflector=cfg.output_dir, datasets=[str(tmp_path / "fresh")],
                                                chunk=4, output_dir=str(out))) == 0
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated["left_out_seen_scenes"] == 1 and evaluated["episodes"]["episodes"] == 2
    assert evaluated["episodes"]["chunk"] == 4 and "chunk-end fire step" in (out / "eval.md").read_text()
    assert run_evaluate(EvaluateReflectorConfig(reflector=cfg.output_dir, datasets=[str(tmp_path / "nothing")],
                                                output_dir=str(out))) == 2
    split = json.loads((Path(cfg.output_dir) / "split.json").read_text())
    assert split["held_out"] and not set(split["held_out"]) & set(split["train"])


_TRAIN_SCRIPT = ("import sys; from world_env_training.configs import TrainReflectorConfig; "
                 "from world_env_training.train.train_reflector import run; import torch; torch.set_num_threads(1); "
                 "sys.exit(run(TrainReflectorConfig.from_yaml(sys.argv[1])))")


def test_training_killed_after_a_checkpoint_resumes_where_it_stopped(tmp_path, datasets):
    cfg = _cfg(tmp_path, datasets, steps=100_000, save_every=3, keep_checkpoints=2, eval_every=0)
    config_file = tmp_path / "train.yaml"
    config_file.write_text(cfg.to_yaml())
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN_SCRIPT, str(config_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint_steps(cfg.output_dir) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.05)
        time.sleep(0.3)  # likely mid-step or mid-write when the kill lands
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = checkpoint_steps(cfg.output_dir)
    assert killed_at, "no checkpoint before the deadline"

    resumed = TrainReflectorConfig(**{**cfg.to_dict(), "steps": killed_at[-1] + 4})
    newest, _ = train(resumed)
    assert json.loads((newest / "train_state.json").read_text())["step"] == killed_at[-1] + 4
    assert checkpoint_steps(cfg.output_dir)[-1] == killed_at[-1] + 4
    assert not [p for p in (Path(cfg.output_dir) / "checkpoints").iterdir() if p.name.startswith(".")]


def test_resume_continues_with_the_same_batches_as_an_uninterrupted_run(tmp_path, datasets):
    straight = _cfg(tmp_path / "a", datasets, steps=6, save_every=6, eval_every=0)
    train(straight)
    split = _cfg(tmp_path / "b", datasets, steps=3, save_every=3, eval_every=0)
    train(split)
    train(TrainReflectorConfig(**{**split.to_dict(), "steps": 6}))
    a, b = Reflector.from_pretrained(straight.output_dir), Reflector.from_pretrained(split.output_dir)
    frames = _frames(5)
    np.testing.assert_allclose(a.score_episode(frames, INSTRUCTIONS[0]), b.score_episode(frames, INSTRUCTIONS[0]),
                               atol=1e-5)


# --- audit and benchmark ------------------------------------------------------------------------

class _ScriptedEnv:
    """Stands in for LiberoEnv: the task counts as achieved once the gripper action closes."""

    def __init__(self, suite, task_id, resolution, seed):
        self.built = (suite, task_id, resolution, seed)
        self.closed = False

    def reset(self, init_state_id, settle_steps=10):
        self.init_state_id = init_state_id
        return {}

    def step(self, action, render=True):
        return {}, bool(action[6] > 0)

    def close(self):
        self.closed = True


def test_reward_hacking_audit_counts_claims_the_simulator_does_not_confirm():
    class FixedReflector:  # fires on frames whose mean is bright, like a fooled judge would
        threshold = 0.5

        def score_episode(self, frames, instruction):
            return (frames.reshape(len(frames), -1).mean(1) > 128).astype(np.float32)

    dark, bright = np.zeros((6, 8, 8, 3), np.uint8), np.full((6, 8, 8, 3), 200, np.uint8)
    open_, close = np.zeros((5, 7)), np.zeros((5, 7))
    close[3:, 6] = 1.0
    rollouts = [ImaginedRollout(bright, open_, "libero_object", 0, 0, "x"),  # claimed, never achieved: false
                ImaginedRollout(bright, close, "libero_object", 0, 1, "x"),  # claimed at 0, achieved at 4: premature
                ImaginedRollout(dark, close, "libero_object", 1, 0, "x"),  # achieved, never claimed: missed
                ImaginedRollout(dark, open_, "libero_object", 1, 1, "x")]  # neither
    envs = []
    audit = audit_reward_hacking(FixedReflector(), rollouts,
                                 make_env=lambda *a: envs.append(_ScriptedEnv(*a)) or envs[-1])
    assert (audit["claimed"], audit["real_successes"], audit["false_successes"]) == (2, 2, 1)
    assert audit["false_success_rate"] == 0.5 and audit["false_success_rate_all"] == 0.25
    assert (audit["missed"], audit["premature"]) == (1, 1)
    assert audit["per_rollout"][1]["real_success_step"] == 4
    assert len(envs) == 2 and all(env.closed for env in envs)  # one simulator per task, closed after
    assert "false-success rate" in format_audit(audit)
    with pytest.raises(ValueError, match="actions"):
        ImaginedRollout(bright, np.zeros((3, 7)), "libero_object", 0, 0, "x")
    # A rollout judged while imagined (LOOP's chunk-end verdicts) keeps its verdict: the bright
    # frames are not scored again, the claim is where imagination ended the episode.
    judged = [ImaginedRollout(bright, close, "libero_object", 0, 1, "x", judged=(np.array([0.1, 0.2]), None)),
              ImaginedRollout(dark, open_, "libero_object", 0, 0, "x", judged=(np.array([0.1, 0.9]), 5))]
    audit = audit_reward_hacking(FixedReflector(), judged, make_env=_ScriptedEnv)
    rows = audit["per_rollout"]
    assert [(r["claimed_step"], r["real_success_step"]) for r in rows] == [(None, 4), (5, None)]
    assert [r["max_reward"] for r in rows] == pytest.approx([0.2, 0.9])
    assert (audit["claimed"], audit["false_successes"], audit["missed"]) == (1, 1, 1)
    with pytest.raises(ValueError, match="judged"):
        ImaginedRollout(dark, open_, "libero_object", 0, 0, "x", judged=(np.array([0.9]), 6))


def test_cached_latency_stays_flat_as_the_episode_grows():
    model = _tiny()
    result = measure_latency(model, lengths=(1, 10, 40), repeats=3)
    cached = result["cached_ms"]
    assert set(cached) == {1, 10, 40} and set(result["uncached_ms"]) == {1, 10, 40}
    assert cached[40] < 3 * cached[1] + 2.0  # flat up to timer noise, not linear in t
    assert "| t |" in format_report(result)
