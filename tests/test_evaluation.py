"""Evaluation harness: statistics, summaries and tables; held-out init states; a real LIBERO run
of both protocols, with the reflector ending self-termination episodes and frames rendered only
when read."""

import pytest

from world_env_training.configs import EvaluateConfig
from world_env_training.eval.evaluation import choose_init_states, markdown_table, summarise
from world_env_training.eval.stats import (flipped, mean_interval, newcombe_interval, outcomes_under,
                                           paired_newcombe_interval, paired_table, solved_elsewhere, wilson_interval)


@pytest.mark.parametrize("k, n, low, high", [
    (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (45, 50, 0.7864, 0.9565),
])
def test_wilson_interval_matches_reference_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


@pytest.mark.parametrize("k, n", [(-1, 5), (6, 5), (0, 0)])
def test_wilson_interval_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError):
        wilson_interval(k, n)


def test_mean_interval_is_the_student_t_interval():
    # mean 2, sample sd 1, n = 3: half width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 2.4841, abs=1e-4) and high == pytest.approx(2 + 2.4841, abs=1e-4)
    with pytest.raises(ValueError):
        mean_interval([1.0])


@pytest.mark.parametrize("k_a, n_a, k_b, n_b, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10.
    (56, 70, 48, 80, 0.0524, 0.3339), (9, 10, 3, 10, 0.1705, 0.8090), (5, 56, 0, 29, -0.0381, 0.1926),
])
def test_newcombe_interval_of_a_difference_matches_the_published_values(k_a, n_a, k_b, n_b, low, high):
    d, lo, hi = newcombe_interval(k_a, n_a, k_b, n_b)
    assert d == pytest.approx(k_a / n_a - k_b / n_b)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_outcomes_under_finds_evaluations_of_the_same_states(tmp_path):
    import json

    def write(folder, states, won):
        episodes = [{"suite": "libero_object", "task_id": 0, "init_state_id": i, "protocol": "gt_termination",
                     "success": i in won} for i in states]
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "eval.json").write_text(json.dumps({"episodes": episodes}))

    write("a/sft", [50, 51], {50})
    write("a/arm", [50, 51], {51})
    write("b/arm", [50, 51], set())
    write("c/other_states", [60, 61], {60})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "eval.json").write_text(json.dumps({"episodes": ["older format"]}))
    units = {("libero_object", 0, 50): True, ("libero_object", 0, 51): False}
    found = outcomes_under(tmp_path, units)
    assert [p.parent.relative_to(tmp_path).as_posix() for p, _ in found] == ["a/arm", "a/sft", "b/arm"]
    assert found[0][1] == {("libero_object", 0, 50): False, ("libero_object", 0, 51): True}
    kept = outcomes_under(tmp_path, units, exclude=[tmp_path / "a"])
    assert [p.parent.relative_to(tmp_path).as_posix() for p, _ in kept] == ["b/arm"]
    # a/arm solves 51, which the baseline fails, and fails 50, which it solves.
    assert flipped(found[0][1], units) == ([51], [50])
    assert solved_elsewhere(found, units) == {("libero_object", 0, 51): [tmp_path / "a/arm/eval.json"]}
    assert solved_elsewhere(kept, units) == {}


def test_paired_interval_uses_the_pairing():
    # Uncorrelated outcomes (both * neither == only_a * only_b): the unpaired interval.
    assert paired_newcombe_interval(2, 8, 8, 32) == pytest.approx(newcombe_interval(10, 50, 10, 50))
    # The same marginals (18/40 vs 13/40) measured on the same init states, A keeping all of B's
    # successes: far narrower than if they were independent samples.
    d, low, high = paired_newcombe_interval(13, 5, 0, 22)
    _, low_u, high_u = newcombe_interval(18, 40, 13, 40)
    assert d == pytest.approx(0.125) and high - low < 0.6 * (high_u - low_u) and low > low_u
    assert paired_table({1: True, 2: True, 3: False, 4: False}, {1: True, 2: False, 3: True, 4: False}) == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="different units"):
        paired_table({1: True}, {2: True})


def test_paired_interval_covers_the_true_difference():
    """Coverage on simulated paired evaluations like ours (45 shared init states, correlated)."""
    import numpy as np

    rng = np.random.default_rng(0)
    p_both, p_a, p_b = 0.25, 0.12, 0.05  # true P(A) = 0.37, P(B) = 0.30
    hits, draws = 0, 4000
    for _ in range(draws):
        counts = rng.multinomial(45, [p_both, p_a, p_b, 1 - p_both - p_a - p_b])
        _, low, high = paired_newcombe_interval(*map(int, counts))
        hits += low <= p_a - p_b <= high
    assert 0.93 <= hits / draws <= 0.985


def _records():
    rows = []
    for task, outcomes in [(0, [1, 1, 0, 1]), (1, [0, 0, 0, 1])]:
        for i, ok in enumerate(outcomes):
            for protocol in ("gt_termination", "self_termination"):
                success = bool(ok) and not (protocol == "self_termination" and task == 1)
                rows.append({"suite": "libero_object", "task_id": task, "protocol": protocol,
                             "instruction": f"task {task}", "init_state_id": i, "success": success,
                             "steps": 100 + i, "ended": "success" if success else "step_limit"})
    return rows


def test_summary_counts_per_task_suite_and_protocol():
    summary = summarise(_records())
    assert summary["tasks"]["libero_object/0"]["gt_termination"]["successes"] == 3
    assert summary["tasks"]["libero_object/1"]["self_termination"]["successes"] == 0
    suite = summary["suites"]["libero_object"]
    assert (suite["gt_termination"]["successes"], suite["gt_termination"]["episodes"]) == (4, 8)
    assert suite["self_termination"]["rate"] == pytest.approx(3 / 8)
    assert summary["overall"]["gt_termination"]["ci95"] == pytest.approx(list(wilson_interval(4, 8)))


def test_markdown_table_has_a_row_per_task_and_suite():
    table = markdown_table(summarise(_records()), "expert")
    lines = [line for line in table.splitlines() if line.startswith("| libero_object")]
    assert len(lines) == 2
    assert "75.0 [" in lines[0] and "(3/4)" in lines[0]
    assert "**libero_object** | all" in table and "**overall**" in table


@pytest.mark.libero
def test_evaluate_expert_and_zero_policies_in_libero(tmp_path):
    import json

    from world_env_training.configs import EvaluateConfig
    from world_env_training.eval.evaluation import evaluate

    expert = evaluate(EvaluateConfig(policy="expert", task_ids=[0], episodes_per_task=2, workers=2,
                                     output_dir=str(tmp_path / "expert")))
    task = expert["tasks"]["libero_object/0"]
    # Ground-truth termination stops at success; self-termination runs until the expert says done.
    assert task["gt_termination"]["successes"] == 2
    assert task["self_termination"]["successes"] == 2
    assert task["self_termination"]["mean_steps"] > task["gt_termination"]["mean_steps"]
    episodes = json.loads((tmp_path / "expert" / "eval.json").read_text())["episodes"]
    assert {e["ended"] for e in episodes if e["protocol"] == "gt_termination"} == {"success"}
    assert {e["ended"] for e in episodes if e["protocol"] == "self_termination"} == {"policy"}
    assert "| libero_object | 0 |" in (tmp_path / "expert" / "eval.md").read_text()

    zero = evaluate(EvaluateConfig(policy="zero", task_ids=[0], episodes_per_task=1, protocol="gt_termination",
                                   workers=1, output_dir=str(tmp_path / "zero")))
    rate = zero["tasks"]["libero_object/0"]["gt_termination"]
    assert rate["successes"] == 0 and rate["mean_steps"] == 280  # held still until libero_object's limit


def test_init_states_are_drawn_seeded_from_those_training_did_not_use():
    training = {("libero_object", 0): [0, 1, 2, 3, 4], ("libero_object", 1): list(range(40))}
    cfg = EvaluateConfig(task_ids=[0, 1], episodes_per_task=10, seed=3)
    chosen = choose_init_states(cfg, training)
    for key, used in training.items():
        assert len(chosen[key]) == 10 and len(set(chosen[key])) == 10
        assert not set(chosen[key]) & set(used) and all(0 <= i < 50 for i in chosen[key])
    assert chosen == choose_init_states(cfg, training)  # seeded: the same draw again
    other = choose_init_states(EvaluateConfig(task_ids=[0, 1], episodes_per_task=10, seed=4), training)
    assert other != chosen
    # Task 1 has exactly 10 held-out states left: all of them, whatever the seed.
    assert chosen[("libero_object", 1)] == list(range(40, 50))

    with pytest.raises(ValueError, match="only 10 init states that no training dataset used"):
        choose_init_states(EvaluateConfig(task_ids=[1], episodes_per_task=11), training)
    with pytest.raises(ValueError, match=r"init_state_ids \[3\] of libero_object task 0 were used in training"):
        choose_init_states(EvaluateConfig(task_ids=[0], init_state_ids=[3, 7]), training)
    assert choose_init_states(EvaluateConfig(task_ids=[0], init_state_ids=[7, 9]), training) == {
        ("libero_object", 0): [7, 9]}
    with pytest.raises(ValueError, match="init_state_ids"):
        EvaluateConfig(init_state_ids=[3, 3])


def test_drawn_init_states_give_more_episodes_than_the_saved_ones():
    training = {("libero_object", 0): [0, 1, 2, 3, 4, 51]}  # e.g. exploration from drawn state 51
    chosen = choose_init_states(EvaluateConfig(task_ids=[0], episodes_per_task=60, init_state_source="drawn"),
                                training)
    assert chosen[("libero_object", 0)] == [50] + list(range(52, 111))
    with pytest.raises(ValueError, match="episodes_per_task=60.*1 to 50"):
        EvaluateConfig(episodes_per_task=60)
    with pytest.raises(ValueError, match="init_state_source='fixed'.*saved or drawn"):
        EvaluateConfig(init_state_source="fixed")


def _release_kept() -> None:
    """Close what jobs run in this process kept (a worker's simulator and models)."""
    from world_env_training.eval import evaluation

    for _, kept in evaluation._KEPT.values():
        if hasattr(kept, "close"):
            kept.close()
    evaluation._KEPT.clear()


@pytest.mark.libero
def test_one_episode_serves_both_protocols_as_separate_runs_would():
    """protocol both simulates each init state once and cuts each protocol's record where it
    ended: the records equal those of a job per protocol (the frames rendered aside). The jobs
    run in this process, as a worker runs them, so that the simulator and models load once."""
    from pathlib import Path

    from world_env_training.eval.evaluation import Job, _run_job

    shipped = Path(__file__).resolve().parents[1] / "pretrained" / "embedded_default"
    # The shipped SFT policy succeeds from init state 8 (near step 105) and fails from 5; the
    # shipped reflector fires near success, and falsely on some failures; zero never succeeds.
    both = ("gt_termination", "self_termination")
    ends = {}
    try:
        for policy, states in ((str(shipped / "sft"), (5, 8)), ("zero", (5,))):
            runs = {}
            for protocols in (both, both[:1], both[1:]):
                job = Job("libero_object", 0, protocols, states, policy, 64, 0, "cpu", str(shipped / "reflector"))
                runs[protocols] = [(p, {k: v for k, v in r.items() if k != "renders"}) for p, r in _run_job(job)[2]]
            in_order = sorted(runs[both], key=lambda pair: (pair[0], pair[1]["init_state_id"]))
            assert in_order == runs[both[:1]] + runs[both[1:]], policy
            ends[policy] = {(p, r["ended"]) for p, r in in_order}
    finally:
        _release_kept()
    assert {("gt_termination", "success"), ("gt_termination", "step_limit"),
            ("self_termination", "reflector")} <= ends[str(shipped / "sft")]
    assert ("gt_termination", "step_limit") in ends["zero"]


@pytest.mark.libero
def test_reflector_ends_self_termination_and_frames_render_only_when_read(tmp_path):
    import json
    import math

    import torch

    from world_env_training.eval.evaluation import Job, _run_job, evaluate
    from world_env_training.models.reflector import Reflector, ReflectorConfig
    from world_env_training.tiny import write_start_states
    from world_env_training.models.vla import VLAConfig, VLAPolicy

    torch.manual_seed(0)
    VLAPolicy(VLAConfig.tiny()).save_pretrained(tmp_path / "policy")
    # A random reflector scores about 0.5: eta 0.99 never fires, eta 0.01 fires on the first frame.
    for eta in (0.99, 0.01):
        Reflector(ReflectorConfig.tiny(threshold=eta)).save_pretrained(tmp_path / f"reflector_{eta}")
    write_start_states(tmp_path / "demos")  # libero_object task 0 starts from init state 0
    common = dict(policy=str(tmp_path / "policy"), task_ids=[0], episodes_per_task=1,
                  training_datasets=[str(tmp_path / "demos")], workers=2)

    evaluate(EvaluateConfig(reflector=str(tmp_path / "reflector_0.99"), output_dir=str(tmp_path / "never"), **common))
    result = json.loads((tmp_path / "never" / "eval.json").read_text())
    assert result["training_init_states"] == {"libero_object/0": [0]}
    evaluated = result["init_states"]["libero_object/0"]
    assert len(evaluated) == 1 and evaluated[0] != 0
    by_protocol = {e["protocol"]: e for e in result["episodes"]}
    chunk = VLAConfig.tiny().chunk_size
    gt, self_term = by_protocol["gt_termination"], by_protocol["self_termination"]
    assert gt["ended"] == "step_limit" and gt["steps"] == 280
    # The policy reads a frame once per chunk (4 for the tiny one), so only those frames are
    # rendered; the reflector scores every 8th (reflector_every's default), frames already there.
    assert gt["renders"] == math.ceil(gt["steps"] / chunk) and 8 % chunk == 0
    assert self_term["ended"] == "step_limit" and self_term["steps"] == 280 and self_term["renders"] == gt["renders"]
    assert 0.0 < self_term["reward"] < 0.99
    assert "training used [0]" in (tmp_path / "never" / "eval.md").read_text()

    # The other cases run as a worker runs its jobs, in this process (one simulator build).
    def episode(reflector: str, every: int = 8) -> dict:
        job = Job("libero_object", 0, ("self_termination",), tuple(evaluated), str(tmp_path / "policy"), 64, 0, "cpu",
                  str(tmp_path / reflector), every)
        (_, record), = _run_job(job)[2]
        return record

    try:
        # reflector_every 1: it reads (and scores) every frame.
        every = episode("reflector_0.99", every=1)
        assert every["ended"] == "step_limit" and every["renders"] == every["steps"] == 280
        first = episode("reflector_0.01")
        assert first["ended"] == "reflector" and first["steps"] == 0 and first["success"] is False
    finally:
        _release_kept()


@pytest.mark.libero
def test_sampled_chunks_change_the_episode_and_repeat_from_the_same_state():
    """sample=true draws each chunk from the Laplace law: the actions differ from the means',
    and the draws restart in every episode from (seed, init state), so a state gives the same
    episode whatever ran before it, and another seed another one. Episodes cut to 24 steps."""
    from pathlib import Path

    import numpy as np
    from world_env_libero.env import LiberoEnv

    from world_env_training.eval.evaluation import evaluate, run_episode
    from world_env_training.policies import make_policy

    sft = str(Path(__file__).resolve().parents[1] / "pretrained" / "embedded_default" / "sft")
    env = LiberoEnv("libero_object", 0, resolution=64, seed=0)
    env.max_steps = 24
    means, drawn = make_policy(sft), make_policy(sft, sample=True)

    def actions(policy, state: int, seed: int = 0) -> np.ndarray:
        taken, act = [], policy.act
        policy.act = lambda obs: taken.append(act(obs)) or taken[-1]
        try:
            run_episode(env, policy, state, "gt_termination", seed=seed)
        finally:
            del policy.act
        return np.array(taken)

    try:
        first = actions(drawn, 8)
        actions(drawn, 5)
        again, other_seed, mean = actions(drawn, 8), actions(drawn, 8, seed=1), actions(means, 8)
    finally:
        env.close()
    assert first.shape == (24, 7) and np.array_equal(first, again)
    assert not np.allclose(first, mean, atol=1e-3) and not np.allclose(first, other_seed, atol=1e-3)
    with pytest.raises(ValueError, match="sample=true"):
        evaluate(EvaluateConfig(policy="expert", sample=True))
    with pytest.raises(ValueError, match="temperature"):
        EvaluateConfig(sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="correlation"):
        EvaluateConfig(sample=True, correlation=1.0)
