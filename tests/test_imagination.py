"""The imagination benchmark and the imagined environment's fast path (issue 13)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from world_env_training.configs import BenchConfig

LAST_LINE = re.compile(r"^imagination: (\d+\.\d+)x LIBERO \((\d+\.\d+) vs (\d+\.\d+) frames/s, "
                       r"B=(\d+), (\d+)px, (fp32|bf16)\)$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from world_env_training.tiny import write_artifacts

    return write_artifacts(tmp_path_factory.mktemp("tiny"), threshold=0.99)


def test_bench_imagination_quick_prints_the_ratio_line(tiny, capsys, tmp_path):
    import json

    from world_env_training import bench

    out = tmp_path / "figures.json"
    cfg = BenchConfig(what=["imagination"], quick=True, policy=tiny["policy"], reflector=tiny["reflector"],
                      world_model=tiny["world_model"], precision="fp32", output=str(out))
    assert bench.run(cfg) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = [line for line in lines if line.startswith("imagination:")][-1]
    match = LAST_LINE.match(last)
    assert match, last
    ratio, imagined, libero, b, res, dtype = match.groups()
    figures = json.loads(out.read_text())["imagination"]
    assert int(res) == 16 and dtype == "fp32" and int(b) in (2, 4)
    assert float(libero) == pytest.approx(max(figures["libero"]["frames_per_s_1proc"],
                                              figures["libero"]["frames_per_s_2proc"]), rel=1e-2)
    assert float(ratio) == pytest.approx(float(imagined) / float(libero), rel=2e-2)
    chunk = figures["chunk_size"]
    for b_key, fig in figures["imagined"].items():
        # The threshold of 0.99 keeps every random-model episode running: B rollouts x one chunk.
        assert fig["frames"] == int(b_key) * chunk
        ms = fig["ms_per_frame"]
        assert ms["world_model"] > 0 and ms["reflector"] > 0 and ms["policy"] > 0
        parts = ms["world_model"] + ms["reflector"] + ms["policy"] + ms["other"]
        assert parts == pytest.approx(ms["total"], rel=1e-6)
        assert fig["world_model_gflops"] > 0
    assert figures["matmul_gflops"]["bf16"] > 0 and figures["matmul_gflops"]["fp32"] > 0
    assert figures["world_model_gflop_per_frame"] > figures["world_model_gflop_per_step"] > 0


def test_reflector_judging_chunk_ends_gives_the_per_frame_scores_of_those_frames(tiny):
    """score_every = chunk: the frames between chunk ends only enter the reflector's cache, and a
    chunk end's score equals the per-frame run's score of the same frame (it reads the same
    evenly spaced earlier frames, cached unjudged)."""
    from world_env_common.camera import CameraModel
    from world_env_training.rl.imagined_env import ImaginedEnv
    from world_env_training.rl.loop import collect_rollouts
    from world_env_training.rl.post_train import load_start_states
    from world_env_training.models.reflector import Reflector
    from world_env_common.robot import PandaModel
    from world_env_training.models.vla import VLAPolicy
    from world_env_training.models.world_model import WorldModel

    policy, reflector = VLAPolicy.from_pretrained(tiny["policy"]), Reflector.from_pretrained(tiny["reflector"])
    world_model, robot = WorldModel.from_pretrained(tiny["world_model"]), PandaModel()
    start = load_start_states(tiny["demos"])[:1]
    chunk = policy.config.chunk_size

    def run(score_every: int):
        make_env = lambda camera: ImaginedEnv(world_model, robot, CameraModel.from_dict(camera), seed=0)  # noqa: E731
        return collect_rollouts(policy, reflector, make_env, start, 3, 2 * chunk + 2, torch.Generator().manual_seed(0),
                                score_every=score_every)

    every, ends = run(1), run(chunk)
    judged = [0, chunk, 2 * chunk, 2 * chunk + 2]  # o_0, two chunk ends, the step limit's short chunk
    assert np.array_equal(every.lengths, ends.lengths) and (every.lengths == 2 * chunk + 2).all()
    for per_frame, at_ends in zip(every.rewards, ends.rewards):
        assert len(per_frame) == 2 * chunk + 3 and len(at_ends) == len(judged)
        np.testing.assert_allclose(at_ends, per_frame[judged], rtol=0, atol=1e-6)
        assert not np.allclose(per_frame[judged], per_frame[judged][0])  # scores differ between frames
    with pytest.raises(ValueError, match="score_every=0"):
        run(0)
