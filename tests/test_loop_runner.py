"""The LOOP run both runners share: post-train and the ROS trainer's core (``OnlineLOOP``) write
metrics lines with the same keys, resume from the newest checkpoint, and draw initial states by
one seeded rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from world_env_training.configs import PostTrainConfig
from world_env_training.rl.loop_runner import METRIC_KEYS, draw_starts
from world_env_training.tiny import write_artifacts

pytestmark = pytest.mark.usefixtures("one_thread")


def test_initial_states_are_drawn_by_one_seeded_rule():
    first = draw_starts(10, 4, seed=0, update=3)
    assert len(set(first)) == 4 and all(0 <= i < 10 for i in first)
    np.testing.assert_array_equal(first, draw_starts(10, 4, seed=0, update=3))  # a resume draws the same
    assert not np.array_equal(first, draw_starts(10, 4, seed=0, update=4))
    assert len(draw_starts(2, 4, seed=0, update=0)) == 4  # fewer states than the batch: with replacement


def _episode(start, policy, rng, ret, fired):
    from world_env_training.rl.online_loop import Episode

    episode = Episode(instruction=start.instruction, ret=ret, fired=fired)
    for _ in range(2):
        actions = rng.uniform(-0.5, 0.5, (policy.config.chunk_size, 7)).astype(np.float32)
        episode.add_chunk(start.frame, start.state, actions, float("nan"))
    return episode


def test_online_loop_and_post_train_write_the_same_metric_keys_and_resume(tmp_path):
    from world_env_training.rl.loop_runner import load_start_states
    from world_env_training.rl.online_loop import OnlineLOOP
    from world_env_training.rl.post_train import train

    paths = write_artifacts(tmp_path / "artifacts", threshold=0.9)
    cfg = PostTrainConfig(policy=paths["policy"], world_model=paths["world_model"], reflector=paths["reflector"],
                          demos=paths["demos"], output_dir=str(tmp_path / "online"), rollouts_per_state=2,
                          batch_size=1, updates=2, max_steps=4)
    starts = load_start_states(paths["demos"])
    rng = np.random.default_rng(0)
    core = OnlineLOOP(cfg)
    for ret in (1.0, 0.0):
        core.add_episode(0, _episode(starts[0], core.model, rng, ret, fired=ret > 0.5))
    assert core.ready()
    record = core.update()
    assert record["update"] == 1 and record["advantage_abs"] == pytest.approx(1.0)
    assert core.checkpoint.endswith("step_0000001")

    resumed = OnlineLOOP(cfg)  # a restarted trainer continues from the checkpoint
    assert resumed.update_count == 1 and resumed.checkpoint == core.checkpoint
    # The policy node draws the policy's own law; the trainer refuses to score another one.
    for changed in ({"temperature": 0.5}, {"correlation": 0.9}):
        with pytest.raises(ValueError, match=next(iter(changed))):
            OnlineLOOP(PostTrainConfig(**{**cfg.to_dict(), **changed}))

    train(PostTrainConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "offline"), "updates": 1}))
    online = [json.loads(line) for line in (tmp_path / "online" / "metrics.jsonl").read_text().splitlines()]
    offline = [json.loads(line) for line in (tmp_path / "offline" / "metrics.jsonl").read_text().splitlines()]
    assert list(online[0]) == list(offline[0]) == list(METRIC_KEYS)
    assert online[0]["env"] == "ros_graph" and offline[0]["env"] == "imagined"
    assert online[0]["chunks"] == 4 and online[0]["ppo_steps"] > 0


def test_post_train_precision_runs_world_model_and_reflector_in_bf16(tmp_path):
    from world_env_training.rl.post_train import train

    paths = write_artifacts(tmp_path / "artifacts", threshold=0.99)
    returns = {}
    for precision in ("fp32", "bf16"):
        cfg = PostTrainConfig(policy=paths["policy"], world_model=paths["world_model"], reflector=paths["reflector"],
                              demos=paths["demos"], output_dir=str(tmp_path / precision), rollouts_per_state=2,
                              batch_size=1, updates=1, max_steps=4, precision=precision)
        train(cfg)
        line = json.loads((tmp_path / precision / "metrics.jsonl").read_text().splitlines()[0])
        returns[precision] = line["return_mean"]
    # Same seeds, same policy draws: only the reduced-precision world model and reflector differ.
    assert returns["bf16"] != returns["fp32"] and returns["bf16"] == pytest.approx(returns["fp32"], abs=0.05)
