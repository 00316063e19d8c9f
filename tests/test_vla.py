"""VLA policy: build, save/load, Laplace law, SFT (loss, kill and resume), evaluation wrapper.

Everything runs on the tiny random config except ``test_default_config_builds_and_runs``,
which builds the real MobileNetV2 + SmolLM2-135M policy (about 15-25 s here, mostly converting
the GGUF weights) and prints its parameter counts.
"""

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
import yaml

from world_env_training.checkpoints import atomic_dir, checkpoint_steps, remove_stale
from world_env_training.configs import TrainSFTConfig
from world_env_training.data.dataset import Dataset, DatasetWriter, Episode
from world_env_training.policies import VLAChunkPolicy, make_policy
from world_env_training.train.train_sft import ChunkSamples, policy_config, train
from world_env_training.models.vla import VLAConfig, VLAPolicy
from world_env_training.models.vla.processor_vla import compute_stats

INSTRUCTIONS = ("push the red block left", "push the blue block right")


pytestmark = pytest.mark.usefixtures("one_thread")


def _obs(batch: int = 3, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    states = rng.normal(size=(batch, 7)).astype(np.float32)
    instructions = [INSTRUCTIONS[i % 2] + " now" * i for i in range(batch)]  # different lengths
    return images, states, instructions


def _tiny(**overrides) -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(VLAConfig.tiny(**overrides))


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """Two tasks told apart by frame colour and instruction, each with its own constant action
    (plus a gripper flip halfway): learnable in a few dozen steps."""
    root = tmp_path_factory.mktemp("demos")
    rng = np.random.default_rng(0)
    with DatasetWriter(root) as writer:
        for task, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            for repeat in range(2):
                steps = 24
                frames = np.zeros((steps + 1, 32, 32, 3), dtype=np.uint8) + np.array(colour, dtype=np.uint8)
                sign = 1.0 if task == 0 else -1.0
                actions = np.zeros((steps, 7), dtype=np.float32)
                actions[:, 0] = 0.6 * sign
                actions[:, 2] = np.linspace(-0.5, 0.5, steps)
                actions[:, 6] = np.where(np.arange(steps) < steps // 2, -1.0, 1.0)
                actions[:, [0, 2]] += rng.normal(0, 0.02, (steps, 2)).astype(np.float32)
                states = np.cumsum(np.vstack([np.zeros((1, 7)), actions * 0.01]), 0).astype(np.float32)
                writer.append(Episode(frames=frames, actions=actions, states=states,
                                      joint_positions=np.zeros((steps + 1, 7), np.float32),
                                      success=np.r_[np.zeros(steps), 1].astype(np.uint8),
                                      instruction=INSTRUCTIONS[task], suite="libero_object", task_id=task,
                                      init_state_id=repeat, camera={}, source="expert", seed=repeat))
    return root


def _sft_config(tmp_path: Path, demos: Path, **overrides) -> TrainSFTConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    policy_file = tmp_path / "policy.yaml"
    tiny = {k: v for k, v in VLAConfig.tiny().to_dict().items()
            if k not in ("vision_encoder", "llm", "lora_rank", "chunk_size")}
    policy_file.write_text(yaml.safe_dump(tiny))
    values = dict(demos=str(demos), output_dir=str(tmp_path / "run"), vision_encoder="tiny_cnn", llm="tiny_llama",
                  lora_rank=4, chunk_size=4, policy_config=str(policy_file), steps=40, batch_size=8,
                  lr_lora=1e-3, lr_heads=3e-3, warmup_steps=5, save_every=20, log_every=5, augment_shift=2)
    values.update(overrides)
    return TrainSFTConfig(**values)


# --- model --------------------------------------------------------------------------------------

def test_tiny_config_builds_fast_with_frozen_backbones():
    _tiny()  # imports transformers and peft
    t0 = time.perf_counter()
    model = _tiny()
    assert time.perf_counter() - t0 < 2.0
    assert not any(p.requires_grad for p in model.vision_encoder.parameters())
    lora = {id(p) for p in model.lora_parameters()}
    for name, p in model.llm.named_parameters():
        assert p.requires_grad == ("lora_" in name), name
    assert lora and model.head_parameters()
    counts = model.parameter_counts()
    assert counts["trainable"] == counts["lora"] + counts["heads"] < counts["total"]
    model.train()
    assert not model.vision_encoder.training  # BatchNorm statistics stay fixed


@pytest.mark.parametrize("encoder", ["mobilenet_v2", "efficientnet_lite0"])
def test_wheel_vision_encoders_give_feature_tokens(encoder):
    model = _tiny(vision_encoder=encoder, image_size=64)
    images, states, instructions = _obs(2, 64)
    tokens = model.vision_encoder(model.processor.images(images))
    assert tokens.shape == (2, 4, 1280)
    mu, log_scale = model.predict_action_chunk(images, states, instructions)
    assert mu.shape == log_scale.shape == (2, 4, 7)


def test_local_hugging_face_folders_load(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)).save_pretrained(tmp_path / "vit")
    words = sorted({w for text in INSTRUCTIONS for w in text.split()} | {"[UNK]", "[PAD]"})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(tmp_path / "lm")
    LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "lm")
    model = _tiny(vision_encoder=str(tmp_path / "vit"), llm=str(tmp_path / "lm"))
    assert model.vision_encoder.out_dim == 32
    mu, _ = model.predict_action_chunk(*_obs(2))
    assert mu.shape == (2, 4, 7) and torch.isfinite(mu).all()


def test_default_config_builds_and_runs(report):
    t0 = time.perf_counter()
    model = VLAPolicy(VLAConfig())
    build_s = time.perf_counter() - t0
    counts = model.parameter_counts()
    assert 130e6 < counts["total"] < 170e6 and counts["lora"] > 0
    mu, log_scale = model.predict_action_chunk(*_obs(1, 64))
    assert mu.shape == (1, 8, 7) and torch.isfinite(mu).all() and torch.isfinite(log_scale).all()
    report(f"default VLA (mobilenet_v2 + smollm2): built in {build_s:.1f} s; {counts['total'] / 1e6:.1f} M "
           f"parameters, {counts['trainable'] / 1e6:.2f} M trainable ({counts['lora'] / 1e6:.2f} M LoRA)")


def test_smollm2_is_converted_once_then_loaded_from_the_disk_cache(tmp_path, monkeypatch):
    from world_env_training.models import backbones

    monkeypatch.setenv("WORLD_ENV_CACHE", str(tmp_path))
    converted_model, converted_tokenizer = backbones._smollm2()  # from the GGUF file
    [saved] = list((tmp_path / "llm").iterdir())  # nothing else left, no staging folder
    assert (saved / "model.safetensors").is_file()
    cached_model, cached_tokenizer = backbones._smollm2()
    assert cached_model.config._name_or_path == str(saved)  # read from the cache, not the GGUF file
    a, b = converted_model.state_dict(), cached_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for text in ("pick up the alphabet soup and place it in the basket", "Put both pots on the stove, é 42"):
        assert converted_tokenizer.encode(text) == cached_tokenizer.encode(text)

    (saved / "model.safetensors").write_bytes(b"damaged")  # a damaged cache is rebuilt, not fatal
    rebuilt_model, _ = backbones._smollm2()
    assert torch.equal(rebuilt_model.embed_tokens.weight, converted_model.embed_tokens.weight)
    assert (saved / "model.safetensors").stat().st_size > 100_000_000


def test_batch_padding_does_not_change_a_sample():
    model = _tiny().eval()
    images, states, instructions = _obs(3)
    mu, log_scale = model.predict_action_chunk(images, states, instructions)
    for i in range(3):
        alone_mu, alone_ls = model.predict_action_chunk(images[i:i + 1], states[i:i + 1], instructions[i:i + 1])
        torch.testing.assert_close(alone_mu[0], mu[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone_ls[0], log_scale[i], atol=1e-5, rtol=1e-5)


def test_bidirectional_queries_see_later_queries():
    """With parallel decoding, changing the last query changes the first step's output."""
    images, states, instructions = _obs(1)
    for bidirectional in (True, False):
        model = _tiny(bidirectional_actions=bidirectional).eval()
        before, _ = model.predict_action_chunk(images, states, instructions)
        with torch.no_grad():
            model.action_queries[-1].add_(1.0)
        after, _ = model.predict_action_chunk(images, states, instructions)
        first_step_changed = not torch.equal(before[0, 0], after[0, 0])
        assert first_step_changed == bidirectional


def test_save_load_round_trip_is_exact(tmp_path):
    model = _tiny()
    with torch.no_grad():  # make LoRA and heads non-trivial so the round trip has something to carry
        for p in model.lora_parameters() + model.head_parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.processor.set_stats({"action_low": -torch.rand(7) - 0.5, "action_high": torch.rand(7) + 0.5,
                               "state_mean": torch.randn(7), "state_std": torch.rand(7) + 0.1})
    model.save_pretrained(tmp_path / "vla")
    loaded = VLAPolicy.from_pretrained(tmp_path / "vla")
    assert loaded.config == model.config
    obs = _obs(3)
    for a, b in zip(model.eval().predict_action_chunk(*obs), loaded.predict_action_chunk(*obs)):
        assert torch.equal(a, b)
    files = sorted(p.name for p in (tmp_path / "vla").iterdir())
    assert files == ["adapter", "config.json", "model.safetensors", "processor.safetensors"]
    assert (tmp_path / "vla" / "model.safetensors").stat().st_size < 200_000  # base weights are not copied
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_config_validation_names_the_field():
    for bad, field in (({"lora_rank": 0}, "lora_rank=0"), ({"vision_encoder": "resnet"}, "vision_encoder='resnet'"),
                       ({"log_scale_min": 1.0}, "log_scale_max=0.0"), ({"prompt_template": "go"}, "prompt_template")):
        with pytest.raises(ValueError, match=field):
            VLAConfig(**bad)
    config = VLAConfig.tiny(llm_layers=1)
    assert VLAConfig.from_json(config.to_json()) == config
    assert VLAConfig.from_dict(yaml.safe_load(config.to_yaml())) == config


# --- the Laplace law ----------------------------------------------------------------------------

def test_log_prob_and_entropy_match_torch_laplace():
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 8, 7, generator=gen, requires_grad=True)
    log_scale = (torch.randn(4, 8, 7, generator=gen) - 1).requires_grad_()
    actions = torch.randn(4, 8, 7, generator=gen)
    law = torch.distributions.Laplace(mu, log_scale.exp())
    ours = VLAPolicy.log_prob(actions, mu, log_scale)
    assert ours.shape == (4, 8)
    torch.testing.assert_close(ours, law.log_prob(actions).sum(-1))
    torch.testing.assert_close(VLAPolicy.entropy(log_scale), law.entropy().sum(-1))
    ours.sum().backward()
    assert mu.grad is not None and log_scale.grad is not None and torch.isfinite(log_scale.grad).all()


def test_sampling_statistics_and_reproducibility():
    mu = torch.tensor([0.3, -0.5, 0.0]).expand(200_000, 3)
    log_scale = torch.log(torch.tensor([0.1, 0.3, 1.0])).expand(200_000, 3)
    draws = VLAPolicy.sample(mu, log_scale, torch.Generator().manual_seed(1))
    torch.testing.assert_close(draws.median(0).values, mu[0], atol=0.01, rtol=0)
    torch.testing.assert_close((draws - mu).abs().mean(0), log_scale[0].exp(), atol=0.01, rtol=0.02)  # E|a-mu| = b
    again = VLAPolicy.sample(mu, log_scale, torch.Generator().manual_seed(1))
    assert torch.equal(draws, again)


def test_distribution_is_reported_in_libero_units():
    model = _tiny().eval()
    model.processor.set_stats({"action_low": torch.full((7,), -0.2), "action_high": torch.full((7,), 0.6),
                               "state_mean": torch.zeros(7), "state_std": torch.ones(7)})
    obs = _obs(2)
    batch = model.processor(*obs)
    with torch.no_grad():
        mu_n, ls_n = model._normalized_distribution(batch)
        mu, log_scale = model.action_distribution(batch)
    torch.testing.assert_close(mu, 0.2 + 0.4 * mu_n)
    torch.testing.assert_close(log_scale, ls_n + np.log(0.4))


# --- SFT ----------------------------------------------------------------------------------------

def test_samples_pad_chunks_past_the_episode_end(demos):
    samples = ChunkSamples(Dataset(demos), chunk_size=4)
    assert len(samples) == 4 * 24
    last = samples.rows[-1]
    samples.rows = samples.rows[-1:]  # only the final step of the last episode
    batch = samples.sample(2, np.random.default_rng(0))
    assert batch["action_is_pad"][0].tolist() == [False, True, True, True]
    np.testing.assert_array_equal(batch["actions"][0, 1:], np.repeat(batch["actions"][0, :1], 3, 0))
    assert tuple(last) == (3, 23)


def test_policy_config_rejects_fields_owned_by_train_sft(tmp_path, demos):
    cfg = _sft_config(tmp_path, demos)
    Path(cfg.policy_config).write_text(yaml.safe_dump({"llm": "smollm2", "image_size": 32}))
    with pytest.raises(ValueError, match="llm"):
        policy_config(cfg)


def test_sft_reduces_the_loss_and_the_run_folder_loads(tmp_path, demos):
    cfg = _sft_config(tmp_path, demos, steps=80, save_every=40, augment_shift=0)
    raw = ChunkSamples(Dataset(demos), 4).sample(32, np.random.default_rng(123))
    torch.manual_seed(cfg.seed)
    config = policy_config(cfg)
    initial = VLAPolicy(config, compute_stats(Dataset(demos), config)).eval()
    with torch.no_grad():
        before = initial(initial.processor(**raw))
    newest = train(cfg)
    assert checkpoint_steps(cfg.output_dir) == [40, 80] and newest.name == "step_0000080"
    trained = VLAPolicy.from_pretrained(cfg.output_dir)  # the run folder resolves to its newest checkpoint
    with torch.no_grad():
        after = trained(trained.processor(**raw))
    assert float(after["l1"]) < 0.7 * float(before["l1"])
    assert float(after["loss"]) < float(before["loss"])
    assert (Path(cfg.output_dir) / "checkpoints" / "latest").resolve() == newest.resolve()
    assert list((Path(cfg.output_dir) / "tb").iterdir())


_TRAIN_SCRIPT = ("import sys; from world_env_training.configs import TrainSFTConfig; "
                 "from world_env_training.train.train_sft import run; import torch; torch.set_num_threads(1); "
                 "sys.exit(run(TrainSFTConfig.from_yaml(sys.argv[1])))")


def test_sft_killed_after_a_checkpoint_resumes_where_it_stopped(tmp_path, demos):
    cfg = _sft_config(tmp_path, demos, steps=100_000, save_every=3, keep_checkpoints=2)
    config_file = tmp_path / "sft.yaml"
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

    resumed = TrainSFTConfig(**{**cfg.to_dict(), "steps": killed_at[-1] + 4})
    newest = train(resumed)
    state = json.loads((newest / "train_state.json").read_text())
    assert state["step"] == killed_at[-1] + 4
    assert checkpoint_steps(cfg.output_dir)[-1] == killed_at[-1] + 4
    assert not [p for p in (Path(cfg.output_dir) / "checkpoints").iterdir() if p.name.startswith(".")]
    policy = make_policy(cfg.output_dir)
    assert isinstance(policy, VLAChunkPolicy)


def test_resume_continues_with_the_same_batches_as_an_uninterrupted_run(tmp_path, demos):
    straight = _sft_config(tmp_path / "a", demos, steps=6, save_every=6)
    train(straight)
    split = _sft_config(tmp_path / "b", demos, steps=3, save_every=3)
    train(split)
    train(TrainSFTConfig(**{**split.to_dict(), "steps": 6}))
    a = VLAPolicy.from_pretrained(straight.output_dir).eval()
    b = VLAPolicy.from_pretrained(split.output_dir).eval()
    obs = _obs(2)
    torch.testing.assert_close(a.predict_action_chunk(*obs)[0], b.predict_action_chunk(*obs)[0], atol=1e-4, rtol=1e-4)


def test_atomic_dir_leaves_nothing_on_failure_and_stale_moves_are_restored(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "checkpoints" / "step_0000001") as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("killed")
    assert checkpoint_steps(tmp_path) == []
    moved = tmp_path / "checkpoints" / ".step_0000002.old-99"
    moved.mkdir()
    (tmp_path / "checkpoints" / ".step_0000003.tmp-99").mkdir()
    remove_stale(tmp_path)
    assert checkpoint_steps(tmp_path) == [2]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000002"]


# --- evaluation wrapper -------------------------------------------------------------------------

class _Env:
    instruction = INSTRUCTIONS[0]


def test_make_policy_replans_every_chunk_and_clips(tmp_path):
    model = _tiny()
    with torch.no_grad():  # push the means outside [-1, 1] so clipping shows
        model.action_head.mean[-1].bias.fill_(3.0)
    model.save_pretrained(tmp_path / "vla")
    policy = make_policy(str(tmp_path / "vla"))
    policy.reset(_Env())
    assert policy.done is False
    images, states, _ = _obs(9)
    calls = []
    predict = policy.model.predict_action_chunk
    policy.model.predict_action_chunk = lambda *a: calls.append(a) or predict(*a)
    first_mu, _ = predict(images[:1], states[:1], [_Env.instruction])
    actions = [policy.act({"image": images[t], "state": states[t]}) for t in range(9)]
    assert len(calls) == 3  # steps 0, 4 and 8 with chunk_size 4
    for a in actions:
        assert a.shape == (7,) and np.all(np.abs(a) <= 1.0)
    np.testing.assert_allclose(actions[:4], np.clip(first_mu[0].numpy(), -1, 1), atol=1e-6)

    with torch.no_grad():  # means back inside [-1, 1]: sampled chunks must differ from them
        policy.model.action_head.mean[-1].bias.fill_(0.0)
    means, sampling = VLAChunkPolicy(policy.model), VLAChunkPolicy(policy.model, sample=True, seed=3)
    for p in (means, sampling):
        p.reset(_Env())
    obs = {"image": images[0], "state": states[0]}
    assert not np.allclose([sampling.act(obs) for _ in range(4)], [means.act(obs) for _ in range(4)])
