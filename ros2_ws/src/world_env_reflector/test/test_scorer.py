"""ReflectorScorer without ROS: a tiny random reflector saved to a temp folder and loaded back."""

from __future__ import annotations

import numpy as np
import pytest

from world_env_reflector.scorer import ReflectorScorer, ScorerLoadError, check_checkpoint

INSTRUCTION = "put the bowl on the plate"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from world_env_training.models.reflector import Reflector, ReflectorConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("reflector") / "tiny"
    Reflector(ReflectorConfig.tiny()).save_pretrained(path)
    return str(path)


def frames(n, height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def test_rewards_in_unit_interval_and_steps_count(checkpoint):
    scorer = ReflectorScorer(checkpoint)
    assert scorer.image_size == 32 and scorer.threshold == pytest.approx(0.5)
    episode = scorer.reset(INSTRUCTION)
    assert episode and scorer.episode_id == episode
    # Any size: the model's processor resizes to its 32 px input.
    verdicts = [scorer.score(f) for f in frames(3)] + [scorer.score(f) for f in frames(2, 100, 30, seed=1)]
    assert [v.step for v in verdicts] == [0, 1, 2, 3, 4]
    assert all(0.0 <= v.reward <= 1.0 for v in verdicts)
    assert scorer.frames_scored == 5 and scorer.score_ms_mean > 0


def test_matches_the_model_and_reset_starts_over(checkpoint):
    from world_env_training.models.reflector import Reflector

    scorer = ReflectorScorer(checkpoint)
    clip = frames(4)
    first = scorer.reset(INSTRUCTION)
    rewards = [scorer.score(f).reward for f in clip]
    reference = Reflector.from_pretrained(checkpoint).score_episode(clip, INSTRUCTION)
    assert np.allclose(rewards, reference, atol=1e-5)
    second = scorer.reset(INSTRUCTION)
    assert second != first
    again = [scorer.score(f) for f in clip]
    assert [v.step for v in again] == [0, 1, 2, 3]
    assert np.allclose([v.reward for v in again], rewards, atol=1e-5)  # the cache was emptied
    assert scorer.reset(INSTRUCTION, episode_id="given") == "given"


def test_done_latches_for_the_episode(checkpoint):
    clip = frames(6)
    probe = ReflectorScorer(checkpoint)
    probe.reset(INSTRUCTION)
    rewards = [probe.score(f).reward for f in clip]
    # A threshold between the first reward and a later one that is lower than it: done fires
    # at frame 0 and must stay on although later rewards fall below the threshold.
    low = min(rewards[1:])
    assert low < rewards[0], rewards  # random weights: rewards differ per frame
    eta = (low + rewards[0]) / 2
    scorer = ReflectorScorer(checkpoint, threshold=eta)
    assert scorer.threshold == pytest.approx(eta)
    scorer.reset(INSTRUCTION)
    verdicts = [scorer.score(f) for f in clip]
    assert verdicts[0].done and verdicts[0].reward > eta
    assert any(v.reward <= eta for v in verdicts[1:])
    assert all(v.done for v in verdicts)
    scorer.reset(INSTRUCTION)  # a new episode clears the latch
    assert scorer.done is False
    scorer.score(clip[1 + int(np.argmin(rewards[1:]))])
    assert scorer.done is False


def test_refusals(checkpoint, tmp_path):
    scorer = ReflectorScorer(checkpoint)
    with pytest.raises(ValueError, match="no instruction yet"):
        scorer.score(frames(1)[0])
    with pytest.raises(ValueError, match="empty instruction"):
        scorer.reset("  ")
    scorer.reset(INSTRUCTION)
    with pytest.raises(ValueError, match="expected \\(H, W, 3\\) uint8"):
        scorer.score(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="expected \\(H, W, 3\\) uint8"):
        scorer.score(np.zeros((8, 8, 3), np.float32))
    assert scorer.step == -1  # nothing was appended
    scorer.clear()
    with pytest.raises(ValueError, match="no instruction yet"):
        scorer.score(frames(1)[0])
    assert check_checkpoint("").startswith("no checkpoint given")
    assert "does not exist" in check_checkpoint(str(tmp_path / "none"))
    assert "neither a reflector model" in check_checkpoint(str(tmp_path))
    with pytest.raises(ScorerLoadError, match="threshold must be in"):
        ReflectorScorer(checkpoint, threshold=1.5)
