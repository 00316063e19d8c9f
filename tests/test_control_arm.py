"""LOOP's control arm: LIBERO as the environment of the same rollouts and update.

``LiberoRolloutEnv`` is checked against the real simulator (an expert demonstration's actions,
replayed chunk by chunk from its init state, achieve the task at the same step and stop there,
with frames rendered only at chunk ends), then ``post-train --env libero`` runs a LOOP update."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.libero, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def demo():
    from world_env_libero.env import LiberoEnv
    from world_env_training.policies.experts import make_expert

    with LiberoEnv("libero_object", 0, resolution=64) as env:
        obs = env.reset(0)
        expert = make_expert(env.raw.env, np.random.default_rng(0))
        first, actions = obs["image"], []
        for _ in range(env.max_steps):
            actions.append(expert.act(env.raw_obs))
            _, success = env.step(actions[-1], render=False)
            if success:
                return {"first": first, "actions": np.array(actions), "instruction": env.instruction}
    pytest.fail("the expert did not solve libero_object task 0 from init state 0")


def _start(instruction, frame, init_state_id=0):
    from world_env_training.rl.loop import StartState

    return StartState(frame=frame, state=np.zeros(7, np.float32), instruction=instruction, camera={}, key="t",
                      suite="libero_object", task_id=0, init_state_id=init_state_id)


def test_replayed_demo_succeeds_at_the_same_step_and_stops(demo):
    from world_env_training.rl.libero_rollouts import LiberoRolloutEnv

    chunk, steps = 8, len(demo["actions"])
    with LiberoRolloutEnv(capacity=2, resolution=64, workers=2) as env:
        obs = env.reset_to([_start(demo["instruction"], demo["first"])] * 2)
        np.testing.assert_array_equal(obs["image"][0], demo["first"])  # o_0 is the real first frame
        # Row 0 replays the demonstration; row 1 holds still (zero actions never succeed).
        padded = np.concatenate([demo["actions"], np.zeros((-steps % chunk, 7))])
        done_at, executed = None, 0
        for t in range(0, len(padded), chunk):
            out = env.step(np.stack([padded[t:t + chunk], np.zeros((chunk, 7))]))
            executed += int(out["steps"].sum())
            assert "images" not in out and out["image"].shape == (2, 64, 64, 3)  # chunk ends only
            assert not out["success"][1].any() and out["steps"][1] == chunk
            if out["success"][0].any():
                done_at = t + int(np.argmax(out["success"][0])) + 1
                assert out["steps"][0] == done_at - t  # stopped at the achieving step
                break
        assert done_at == steps
        assert executed == steps + -(-steps // chunk) * chunk  # executed steps, both rows


def test_post_train_in_libero_makes_an_update_judged_by_success(tmp_path):
    from world_env_training.configs import PostTrainConfig
    from world_env_training.rl.post_train import train
    from world_env_training.tiny import write_start_states
    from world_env_training.models.vla import VLAConfig, VLAPolicy

    torch.manual_seed(0)
    VLAPolicy(VLAConfig.tiny()).save_pretrained(tmp_path / "policy")
    write_start_states(tmp_path / "demos")  # libero_object tasks 0-2 from init states 0-2
    cfg = PostTrainConfig(policy=str(tmp_path / "policy"), env="libero", reflector=str(tmp_path / "none"),
                          world_model=str(tmp_path / "none"), demos=str(tmp_path / "demos"),
                          output_dir=str(tmp_path / "loop"), rollouts_per_state=2, batch_size=1, updates=1,
                          max_steps=8, libero_workers=2)
    newest, _ = train(cfg)
    record, = [json.loads(line) for line in (tmp_path / "loop" / "metrics.jsonl").read_text().splitlines()]
    assert record["env"] == "libero" and record["update"] == 1
    # A random policy achieves nothing in 8 steps: every episode runs to the limit with return 0.
    assert record["episode_length"] == 8 and record["return_mean"] == 0.0 and record["fired_rate"] == 0.0
    assert record["chunks"] == 2 * 2  # 2 rollouts x ceil(8 / chunk_size 4)
    assert newest is not None and (newest / "config.json").is_file()


def test_memory_shortfall_warns_only_past_the_available_memory():
    """The control arm's pre-flight check: 32 simulators (the 4 x 8 batch the OOM killer
    stopped) do not fit in 23 GB, 16 fit in their own estimate, and one fits on this machine
    (its real MemAvailable)."""
    from world_env_training.rl.libero_rollouts import SIMULATOR_BYTES, memory_shortfall

    warning = memory_shortfall(32, 23 * 2 ** 30)
    assert "32 LIBERO simulators" in warning and "23.0 GB is available" in warning
    assert memory_shortfall(16, 16 * SIMULATOR_BYTES) is None
    assert memory_shortfall(1) is None
