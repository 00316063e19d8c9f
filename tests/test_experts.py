"""Scripted LIBERO experts solve a libero_object and a libero_spatial task (2 init states each).

Lean on purpose (CI budget): no cameras, 4 episodes in all. The full per-task table comes from
``python -m world_env_training.eval.expert_eval <suite>`` (see EXPERTS.md).
"""
import numpy as np
import pytest

from world_env_training.eval.expert_eval import MAX_STEPS, evaluate_expert, format_table
from world_env_training.policies.experts import make_expert, parse_goal

pytestmark = pytest.mark.libero


@pytest.mark.parametrize("suite,task_id", [("libero_object", 0), ("libero_spatial", 0)])
def test_expert_succeeds(suite, task_id, report):
    res = evaluate_expert(suite, [task_id], init_state_ids=[0, 1])
    report(format_table(res))
    r = res[task_id]
    assert r["successes"] == r["episodes"] == 2, r["failures"]
    assert r["mean_steps"] < MAX_STEPS[suite]


def test_expert_api_and_noise():
    from world_env_training.eval.expert_eval import SETTLE_STEPS, make_env

    env, _, inits = make_env("libero_object", 0)
    try:
        env.reset()
        obs = env.set_init_state(inits[0])
        for _ in range(SETTLE_STEPS):
            obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
        assert parse_goal(env.env) == [("in", "alphabet_soup_1", "basket_1_contain_region")]
        expert = make_expert(env.env, rng=np.random.default_rng(0))
        for _ in range(20):
            a = expert.act(obs)
            assert a.shape == (7,) and np.all(np.abs(a) <= 1.0)
            obs, *_ = env.step(a)
        assert not expert.done
        expert.reset()
        assert not expert.done and expert.phase == "start"
    finally:
        env.close()
