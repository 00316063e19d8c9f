"""collect-demos and explore against real LIBERO: datasets, labels, resume, exploration noise."""

import numpy as np
import pytest

from world_env_training.data.collect import collect_demos, explore
from world_env_training.configs import CollectDemosConfig, ExploreConfig
from world_env_training.data.dataset import Dataset

pytestmark = pytest.mark.libero


def test_collect_demos_writes_successful_labelled_episodes_and_resumes(tmp_path):
    # init_state_ids: the expert demonstrates drawn scene 57 instead of saved state 0.
    cfg = CollectDemosConfig(task_ids=[0], demos_per_task=1, post_success_steps=3, init_state_ids=[57, 3],
                             output_dir=str(tmp_path / "demos"), workers=1)
    result = collect_demos(cfg)
    assert result["short"] == {}
    ds = Dataset(cfg.output_dir)
    assert len(ds) == 1 and ds.verify()["bad"] == {}
    assert ds.keys() == ["expert/libero_object/0/57"] and ds.entry(0)["init_state_id"] == 57
    ep = ds[0]
    assert ep.source == "expert" and ep.suite == "libero_object" and ep.task_id == 0
    assert ep.frames.shape == (ep.length + 1, 64, 64, 3) and ep.actions.shape == (ep.length, 7)
    assert ep.succeeded and ep.success_step == ep.length - 3  # 3 frames recorded after success
    assert ep.success[: ep.success_step].sum() == 0 and ep.success[ep.success_step:].all()
    assert ep.camera["width"] == 64 and "pick up" in ep.instruction

    again = collect_demos(cfg)  # resume: everything asked for is there already
    assert again["collected_now"] == {} and len(Dataset(cfg.output_dir)) == 1


def test_explore_keeps_noisy_episodes_with_their_sampling_distribution(tmp_path):
    # At this noise the expert still succeeds (near step 115), so the episodes end early.
    cfg = ExploreConfig(policy="expert", task_ids=[0], episodes_per_task=2, noise_scale=0.1,
                        post_success_steps=0, output_dir=str(tmp_path / "explore"), workers=1, init_state_ids=[7])
    explore(cfg)
    ds = Dataset(cfg.output_dir)
    assert len(ds) == 2
    assert sorted(ds.keys()) == ["exploration/libero_object/0/0", "exploration/libero_object/0/1"]
    # init_state_ids: both episodes start from init state 7, with different noise.
    assert [ds.entry(i)["init_state_id"] for i in range(2)] == [7, 7]
    assert not np.allclose(ds[0].actions[:5], ds[1].actions[:5])
    for ep in (ds[0], ds[1]):
        mean, scale = ep.extras["action_mean"], ep.extras["action_scale"]
        assert mean.shape == scale.shape == (ep.length, 7)
        assert np.all(scale == np.float32(0.1))
        # The executed actions are the noisy ones: they differ from the means and stay in range.
        assert np.abs(ep.actions - mean).mean() > 0.05 and np.abs(ep.actions).max() <= 1.0


def test_explore_max_steps_cuts_episodes_to_start_states_post_train_reads(tmp_path):
    from world_env_training.rl.loop_runner import load_start_states

    cfg = ExploreConfig(policy="zero", task_ids=[0], episodes_per_task=2, max_steps=3,
                        output_dir=str(tmp_path / "starts"), workers=1, init_state_ids=[12, 13])
    explore(cfg)
    ds = Dataset(cfg.output_dir)
    assert [ds[i].length for i in range(2)] == [3, 3]  # the zero policy alone would run to the step limit
    starts = load_start_states(cfg.output_dir)
    assert [s.init_state_id for s in starts] == [12, 13]
    assert not np.array_equal(starts[0].frame, starts[1].frame)  # two scenes, two first frames
    with pytest.raises(ValueError, match="max_steps"):
        ExploreConfig(max_steps=-1)


def test_explore_rejects_bad_init_state_ids():
    with pytest.raises(ValueError, match="init_state_ids=.*distinct non-negative init state ids"):
        ExploreConfig(init_state_ids=[3, 3])
    with pytest.raises(ValueError, match="init_state_ids"):
        ExploreConfig(init_state_ids=[-1])
    assert ExploreConfig(init_state_ids=[50]).init_state_ids == [50]  # a drawn state


def test_explore_rejects_an_unknown_policy_before_starting_simulators(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder nor a built-in"):
        explore(ExploreConfig(policy="no_such_policy", output_dir=str(tmp_path / "x")))
