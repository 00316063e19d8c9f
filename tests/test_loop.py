"""LOOP: the leave-one-out advantages and PPO objective on hand-made cases, rollouts in the
imagined environment with tiny random models, PPO steps moving the policy the way the
advantages say, kill-and-resume of ``post-train``, and two gloo ranks under torchrun."""

from __future__ import annotations

import hashlib
import json
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

from world_env_training.tiny import write_artifacts
from world_env_training.configs import PostTrainConfig
from world_env_training.rl.loop import chunk_log_probs, collect_rollouts, ppo_loss, ppo_update, rloo_advantages

TESTS = Path(__file__).parent


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    # threshold 0.9: the random reflector (R near 0.5) rarely ends an episode early
    return write_artifacts(tmp_path_factory.mktemp("loop_artifacts"), threshold=0.9)


def test_rloo_baseline_is_the_mean_of_the_other_rollouts():
    returns = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.2, 0.4, 0.6, 0.8], [0.5, 0.5, 0.5, 0.5]])
    adv = rloo_advantages(returns)
    torch.testing.assert_close(adv[0], torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))
    torch.testing.assert_close(adv[1, 0], torch.tensor(0.2 - (0.4 + 0.6 + 0.8) / 3))
    torch.testing.assert_close(adv[2], torch.zeros(4))  # all equal: nothing to learn
    torch.testing.assert_close(adv.sum(1), torch.zeros(3), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="N >= 2"):
        rloo_advantages(torch.ones(3, 1))


def test_ppo_objective_clips_the_ratio_only_where_it_would_help():
    old = torch.zeros(4)
    new = torch.tensor([0.0, 0.5, 0.5, -0.5], requires_grad=True)  # ratios 1, e^.5, e^.5, e^-.5
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, stats = ppo_loss(new, old, adv, clip_eps=0.1)
    r = np.exp([0.0, 0.5, 0.5, -0.5])
    # min(r A, clip(r) A): 1; 1.1 (clipped: no gain beyond 1 + eps); -e^.5 (unclipped, the
    # worse one); -0.9 (clipped at 1 - eps)
    expected = -np.mean([1.0, 1.1, -r[2], -0.9])
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # Gradient only through the unclipped terms: samples 0 and 2.
    np.testing.assert_allclose(new.grad.numpy(), [-r[0] * 1.0 / 4, 0.0, r[2] / 4, 0.0], rtol=1e-6, atol=1e-7)
    assert float(stats["clip_fraction"]) == pytest.approx(0.75)
    assert float(stats["approx_kl"]) == pytest.approx(np.mean((r - 1) - np.log(r)), rel=1e-5)


def _load(artifacts):
    from world_env_common.camera import CameraModel
    from world_env_training.rl.imagined_env import ImaginedEnv
    from world_env_training.rl.loop_runner import load_start_states
    from world_env_training.models.reflector import Reflector
    from world_env_common.robot import PandaModel
    from world_env_training.models.vla import VLAPolicy
    from world_env_training.models.world_model import WorldModel

    policy = VLAPolicy.from_pretrained(artifacts["policy"])
    world_model = WorldModel.from_pretrained(artifacts["world_model"])
    reflector = Reflector.from_pretrained(artifacts["reflector"])
    robot = PandaModel()

    def make_env(camera):
        return ImaginedEnv(world_model, robot, CameraModel.from_dict(camera), seed=0)

    return policy, reflector, make_env, load_start_states(artifacts["demos"])


def test_rollouts_record_what_was_sampled_and_what_the_reflector_said(artifacts):
    policy, reflector, make_env, starts = _load(artifacts)
    n, max_steps, chunk = 3, 10, policy.config.chunk_size
    gen = torch.Generator().manual_seed(0)
    ro = collect_rollouts(policy, reflector, make_env, starts[:2], n, max_steps, gen)

    assert ro.returns.shape == (2, n) and ro.lengths.shape == (2, n)
    # Each live episode asks for a chunk every `chunk` steps: ceil(length / chunk) chunks.
    per_episode = np.bincount(ro.episode, minlength=2 * n)
    np.testing.assert_array_equal(per_episode, np.ceil(ro.lengths.reshape(-1) / chunk).astype(int))
    assert ro.actions.shape == (len(ro), chunk, 7) and ro.images.shape[1:] == (16, 16, 3)
    for e in range(2 * n):
        rewards = ro.rewards[e]
        assert len(rewards) == ro.lengths.flat[e] + 1  # o_0 .. o_T
        assert ro.returns.flat[e] == pytest.approx(rewards[-1])  # the reward where it ended
        assert ro.fired.flat[e] == (rewards[-1] > reflector.threshold)
        assert not np.any(rewards[:-1] > reflector.threshold)  # it ended at the first firing
        assert ro.fired.flat[e] or ro.lengths.flat[e] == max_steps
    # The stored log-probabilities are the policy's own: PPO starts at ratio 1.
    new, scale = chunk_log_probs(policy.action_distribution, policy, ro.images, ro.states, ro.instructions,
                                 ro.actions)
    np.testing.assert_allclose(new.detach().numpy(), ro.log_probs, rtol=1e-4, atol=1e-3)
    # Same seed, same rollouts (what a resumed run relies on).
    again = collect_rollouts(policy, reflector, make_env, starts[:2], n, max_steps, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(again.actions, ro.actions)
    np.testing.assert_array_equal(again.images, ro.images)

    binary = collect_rollouts(policy, reflector, make_env, starts[:2], n, max_steps, torch.Generator().manual_seed(0),
                              binary_reward=True, keep_episodes=True)
    np.testing.assert_array_equal(binary.returns, binary.fired.astype(np.float32))
    # Kept episodes: o_0..o_T and the T actions as executed (the sampled chunks, clipped, in order).
    for e in range(2 * n):
        length = binary.lengths.flat[e]
        assert binary.episode_frames[e].shape == (length + 1, 16, 16, 3)
        executed = np.clip(binary.actions[binary.episode == e], -1, 1).reshape(-1, 7)[:length]
        np.testing.assert_array_equal(binary.episode_actions[e], executed)
        np.testing.assert_array_equal(binary.episode_frames[e][0], starts[e // n].frame)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ppo_steps_move_chunk_likelihoods_the_way_the_advantage_says(artifacts, sign):
    policy, reflector, make_env, starts = _load(artifacts)
    ro = collect_rollouts(policy, reflector, make_env, starts[:1], 2, 8, torch.Generator().manual_seed(1))
    adv = torch.full((len(ro),), sign)
    old = torch.from_numpy(ro.log_probs)
    optimizer = torch.optim.AdamW(policy.lora_parameters() + policy.head_parameters(), lr=1e-3)
    policy.train()
    for _ in range(3):
        new, _ = chunk_log_probs(policy.action_distribution, policy, ro.images, ro.states, ro.instructions, ro.actions)
        loss, _ = ppo_loss(new, old, adv, clip_eps=0.2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        new, _ = chunk_log_probs(policy.action_distribution, policy, ro.images, ro.states, ro.instructions, ro.actions)
    # The surrogate's gradient raises (A > 0) or lowers (A < 0) the mean log-likelihood; single
    # chunks may move the other way (two rollouts share their first observation).
    change = (new - old).numpy()
    assert sign * change.mean() > 0.1, change


def test_the_kl_limit_stops_an_update_that_drifts(artifacts):
    policy, reflector, make_env, starts = _load(artifacts)
    ro = collect_rollouts(policy, reflector, make_env, starts[:1], 2, 8, torch.Generator().manual_seed(2))
    samples = {"images": ro.images, "states": ro.states, "instructions": ro.instructions, "actions": ro.actions}
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    runs = {}
    for target in (0.0, 1e-3):
        policy.load_state_dict(state)
        optimizer = torch.optim.AdamW(policy.lora_parameters() + policy.head_parameters(), lr=1e-2)
        # Tiny advantages: Adam still moves by about the learning rate per step.
        runs[target] = ppo_update(policy, policy.action_distribution, optimizer,
                                  policy.lora_parameters() + policy.head_parameters(), samples,
                                  torch.from_numpy(ro.log_probs), torch.full((len(ro),), 1e-6), 0.1, epochs=3,
                                  minibatches=2, grad_clip=1.0, seed=0, target_kl=target)
    assert runs[0.0]["minibatches"] == 6 and not runs[0.0]["kl_stopped"]
    assert runs[0.0]["approx_kl"] / 6 > 1e-3  # without the limit it drifts past it ...
    assert runs[1e-3]["kl_stopped"] and 1 <= runs[1e-3]["minibatches"] < 6  # ... with it, it stops


def test_an_update_without_advantage_leaves_the_policy_as_it_was(tmp_path, artifacts):
    from world_env_training.rl.loop_runner import LoopLearner

    policy, reflector, make_env, starts = _load(artifacts)
    ro = collect_rollouts(policy, reflector, make_env, starts[:1], 2, 8, torch.Generator().manual_seed(3))
    samples = {"images": ro.images, "states": ro.states, "instructions": ro.instructions, "actions": ro.actions}
    old = torch.from_numpy(ro.log_probs)
    cfg = PostTrainConfig(policy=artifacts["policy"], output_dir=str(tmp_path / "run"), lr_lora=1e-3, lr_heads=1e-3,
                          target_kl=0.0)
    learner = LoopLearner(cfg, torch.device("cpu"))
    assert learner.update(samples, old, np.array([[1.0, 0.0]]), ro.episode)["minibatches"] > 0
    after_signal = {k: v.clone() for k, v in learner.model.state_dict().items()}
    for returns in ([[0.0, 0.0]], [[1.0, 1.0]]):  # every rollout of the state scored alike
        sums = learner.update(samples, old, np.array(returns), ro.episode)
        assert sums["minibatches"] == 0 and sums["adv_abs"] == 0.0
        for key, value in learner.model.state_dict().items():
            torch.testing.assert_close(value, after_signal[key], rtol=0, atol=0, msg=key)
    # What the skip prevents: PPO steps on zero advantages still move the policy (Adam's momentum).
    ppo_update(learner.model, learner.model.action_distribution, learner.optimizer, learner.trainable, samples, old,
               torch.zeros(len(old)), 0.1, 1, 1, 1.0, seed=0)
    assert any(not torch.equal(v, after_signal[k]) for k, v in learner.model.state_dict().items())


def _post_train_script(paths: dict, run_dir: Path, **overrides) -> str:
    cfg = dict(paths, output_dir=str(run_dir), batch_size=2, rollouts_per_state=2, max_steps=6, minibatches=2,
               save_every=1, keep_checkpoints=0, **overrides)
    return textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads(1)
        from world_env_training.configs import PostTrainConfig
        from world_env_training.rl.post_train import run
        sys.exit(run(PostTrainConfig(updates=int(sys.argv[1]), **{cfg!r})))
        """)


def test_post_train_killed_at_any_moment_resumes_without_losing_an_update(tmp_path, artifacts):
    from world_env_training.checkpoints import checkpoint_steps

    run_dir = tmp_path / "run"
    script = _post_train_script(artifacts, run_dir)
    proc = subprocess.Popen([sys.executable, "-c", script, "1000"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (run_dir / "checkpoints" / "step_0000003").is_dir():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "no third checkpoint within 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = checkpoint_steps(run_dir)[-1]
    done = subprocess.run([sys.executable, "-c", script, str(killed_at + 2)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming at update {killed_at}" in done.stdout
    steps = checkpoint_steps(run_dir)
    assert steps == list(range(1, killed_at + 3))  # every update kept, none redone twice
    updates = [json.loads(line)["update"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert updates == list(range(1, killed_at + 3))
    assert (run_dir / "strips" / f"update_{killed_at + 2:04d}.png").is_file()
    # The run folder loads as a policy, as evaluation does.
    from world_env_training.policies import make_policy

    assert make_policy(str(run_dir)).model.config.chunk_size == 4


def test_bad_inputs_fail_early_naming_them(tmp_path, artifacts, capsys):
    from world_env_training.rl.post_train import run

    missing = str(tmp_path / "missing")
    assert run(PostTrainConfig(**dict(artifacts, world_model=missing), output_dir=str(tmp_path / "a"))) == 2
    assert missing in capsys.readouterr().err
    # Start frames of another size than the world model predicts.
    from world_env_common.camera import CameraModel
    from world_env_training.data.dataset import Dataset, DatasetWriter

    source = Dataset(artifacts["demos"])
    with DatasetWriter(tmp_path / "big") as writer:
        episode = source[0]
        episode.frames = np.repeat(np.repeat(episode.frames, 2, 1), 2, 2)
        episode.camera = CameraModel.from_dict(episode.camera).resized(32, 32).to_dict()
        writer.append(episode)
    assert run(PostTrainConfig(**dict(artifacts, demos=str(tmp_path / "big")), output_dir=str(tmp_path / "b"))) == 2
    assert "frames are 32x32, the world model predicts 16x16" in capsys.readouterr().err
    with pytest.raises(ValueError, match="rollouts_per_state=1"):
        PostTrainConfig(rollouts_per_state=1)


def _param_digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_two_gloo_ranks_keep_identical_parameters(tmp_path, artifacts):
    out = tmp_path / "ranks"
    out.mkdir()
    script = tmp_path / "two_ranks.py"
    cfg = dict(artifacts, output_dir=str(tmp_path / "run"), batch_size=2, rollouts_per_state=2, max_steps=6,
               minibatches=2, updates=2)
    script.write_text(textwrap.dedent(f"""
        import hashlib, json, os, sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(TESTS)!r})
        from test_loop import _param_digest
        from world_env_training.configs import PostTrainConfig
        from world_env_training.rl.post_train import train
        newest, model = train(PostTrainConfig(**{cfg!r}))
        rank = int(os.environ["RANK"])
        starts = json.loads(open({str(tmp_path / 'run' / 'metrics.jsonl')!r}).readline()) if rank == 0 else None
        open(os.path.join({str(out)!r}, f"rank{{rank}}.json"), "w").write(json.dumps(
            {{"digest": _param_digest(model), "newest": str(newest), "first": starts}}))
        """))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    from world_env_training.models.vla import VLAPolicy

    start = VLAPolicy.from_pretrained(artifacts["policy"])
    saved = VLAPolicy.from_pretrained(ranks[0]["newest"])
    assert _param_digest(saved) == ranks[0]["digest"]  # the checkpoint is what the ranks hold
    assert _param_digest(start) != ranks[0]["digest"]  # and training moved it
    first = ranks[0]["first"]
    assert first["stepped"] and first["chunks"] == 2 * 2 * 2  # both ranks' rollouts counted: 2 states x 2 x 2 chunks


def test_one_step_at_the_default_step_size_stays_inside_the_kl_limit_where_1e_5_leaves_it():
    # The shipped SFT policy's Laplace scale is small (b ~ 0.02), so chunk likelihoods react
    # strongly to its weights (results/ppo_step_size: on real rollouts one Adam step at 1e-5
    # reached KL 1.8, at 2e-6 0.09). Here: chunks it samples on the 5 demonstrations' frames,
    # each demonstration an episode of one initial state, one of them a success (RLOO
    # advantages); one PPO step on all of them, then the KL over all of them.
    from world_env_training.data.dataset import Dataset
    from world_env_training.models.vla import VLAPolicy
    from world_env_training.models.vla.sampling import ChunkSampler

    shipped = TESTS.parent / "pretrained" / "embedded_default"
    demos = Dataset(shipped / "demos")
    episodes = [demos[i] for i in range(5)]
    times = range(0, 112, 7)
    images = np.stack([e.frames[t] for e in episodes for t in times])
    states = np.stack([e.states[t] for e in episodes for t in times]).astype(np.float32)
    instructions = [e.instruction for e in episodes for _ in times]
    defaults = PostTrainConfig()
    policy = VLAPolicy.from_pretrained(str(shipped / "sft"))
    drawn = ChunkSampler(policy, sample=True, seed=0)(images, states, instructions)
    samples = {"images": images, "states": states, "instructions": instructions, "actions": drawn.actions.numpy()}
    advantages = rloo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])).reshape(-1).repeat_interleave(len(times))
    weights = {k: v.clone() for k, v in policy.state_dict().items()}
    kl = {}
    for lr in (defaults.lr_lora, 1e-5):
        policy.load_state_dict(weights)
        trainable = policy.lora_parameters() + policy.head_parameters()
        optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
        ppo_update(policy, policy.action_distribution, optimizer, trainable, samples, drawn.log_prob, advantages,
                   defaults.clip_eps, epochs=1, minibatches=1, grad_clip=defaults.grad_clip, seed=0)
        with torch.no_grad():
            new, _ = chunk_log_probs(policy.action_distribution, policy.eval(), images, states, instructions,
                                     samples["actions"])
        log_ratio = new - drawn.log_prob
        kl[lr] = float((log_ratio.exp() - 1 - log_ratio).mean())
    assert kl[defaults.lr_lora] < defaults.target_kl < kl[1e-5], kl
