"""One chunk sampler for every user of the policy: LOOP's imagined rollouts, the evaluation
policy and the ROS policy node's controller draw the same chunk, with the same
log-probability, from the same observation and noise; the PPO update rescores it the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from world_env_training.tiny import write_artifacts

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from world_env_common.camera import CameraModel
    from world_env_training.rl.imagined_env import ImaginedEnv
    from world_env_training.rl.loop_runner import load_start_states
    from world_env_training.models.reflector import Reflector
    from world_env_common.robot import PandaModel
    from world_env_training.models.vla import VLAPolicy
    from world_env_training.models.world_model import WorldModel

    artifacts = write_artifacts(tmp_path_factory.mktemp("sampler_artifacts"), threshold=0.9)
    policy = VLAPolicy.from_pretrained(artifacts["policy"])
    world_model = WorldModel.from_pretrained(artifacts["world_model"])
    robot = PandaModel()

    def make_env(camera):
        return ImaginedEnv(world_model, robot, CameraModel.from_dict(camera), seed=0)

    return policy, Reflector.from_pretrained(artifacts["reflector"]), make_env, load_start_states(artifacts["demos"])[0]


class _Env:
    def __init__(self, instruction):
        self.instruction = instruction


def _three_users(loaded, seed):
    from world_env_policy.controller import VLAChunkPredictor
    from world_env_training.rl.loop import chunk_log_probs, collect_rollouts
    from world_env_training.policies import VLAChunkPolicy

    policy, reflector, make_env, start = loaded
    chunk = policy.config.chunk_size
    ro = collect_rollouts(policy, reflector, make_env, [start], 2, chunk, torch.Generator().manual_seed(seed))
    first = int(np.flatnonzero(ro.episode == 0)[0])  # episode 0's first chunk: from the start frame
    loop = {"actions": ro.actions[first], "log_prob": float(ro.log_probs[first])}
    rescored, _ = chunk_log_probs(policy.action_distribution, policy, ro.images[first:first + 1],
                                  ro.states[first:first + 1], [ro.instructions[first]], ro.actions[first:first + 1])
    loop["update_log_prob"] = float(rescored[0].detach())

    evaluation = VLAChunkPolicy(policy, sample=True, seed=seed)
    evaluation.reset(_Env(start.instruction))
    executed = evaluation.act({"image": start.frame, "state": start.state})
    ev = {"actions": evaluation.last.actions[0].numpy(), "log_prob": float(evaluation.last.log_prob[0]),
          "executed": executed}

    node = VLAChunkPredictor(policy, sample=True, seed=seed)
    node_actions = node.predict(start.frame, start.state, start.instruction)
    return loop, ev, {"actions": node_actions, "log_prob": node.last_log_prob}


def test_loop_evaluation_and_node_draw_the_same_chunk_with_the_same_log_probability(loaded):
    loop, ev, node = _three_users(loaded, seed=7)
    np.testing.assert_allclose(ev["actions"], loop["actions"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(node["actions"], loop["actions"], rtol=0, atol=1e-6)
    assert ev["log_prob"] == pytest.approx(loop["log_prob"], abs=1e-4)
    assert node["log_prob"] == pytest.approx(loop["log_prob"], abs=1e-4)
    assert loop["update_log_prob"] == pytest.approx(loop["log_prob"], abs=1e-4)
    # What runs is the sampled action clipped to LIBERO's range, not the raw draw.
    np.testing.assert_allclose(ev["executed"], np.clip(loop["actions"][0], -1.0, 1.0), atol=1e-6)

    # The agreement is not vacuous: other noise draws another chunk with another likelihood.
    other, _, _ = _three_users(loaded, seed=8)
    assert not np.allclose(other["actions"], loop["actions"])
    assert other["log_prob"] != pytest.approx(loop["log_prob"], abs=1e-3)


def test_means_are_scored_and_clipped_by_the_sampler(loaded):
    from world_env_training.models.vla import ChunkSampler, clip_actions

    policy, _, _, start = loaded
    drawn = ChunkSampler(policy, sample=False)(start.frame[None], start.state[None], [start.instruction])
    torch.testing.assert_close(drawn.actions, drawn.mu)
    # At the mean the Laplace density is 1 / (2 b) per entry.
    expected = (-drawn.log_scale - np.log(2.0)).sum(dim=(1, 2))
    torch.testing.assert_close(drawn.log_prob, expected, rtol=0, atol=1e-4)
    assert drawn.executed(3).shape == (1, 3, 7)
    np.testing.assert_array_equal(clip_actions([[-2.0, 0.5, 3.0]]), [[-1.0, 0.5, 1.0]])


def test_a_tempered_sampler_draws_closer_to_the_mean_and_ppo_rescores_it_at_that_temperature(loaded):
    from world_env_training.models.vla import ChunkSampler
    from world_env_training.rl.loop import chunk_log_probs

    policy, _, _, start = loaded
    images, states = np.repeat(start.frame[None], 64, 0), np.repeat(start.state[None], 64, 0)
    instructions = [start.instruction] * 64
    spread, scored = {}, {}
    for temperature in (1.0, 0.25):
        drawn = ChunkSampler(policy, sample=True, seed=0, temperature=temperature)(images, states, instructions)
        _, own = policy.predict_action_chunk(images, states, instructions)
        torch.testing.assert_close(drawn.log_scale, own + np.log(temperature), rtol=0, atol=1e-5)
        spread[temperature] = float((drawn.actions - drawn.mu).abs().mean())
        with torch.no_grad():
            new, _ = chunk_log_probs(policy.action_distribution, policy, images, states, instructions,
                                     drawn.actions.numpy(), temperature)
            at_one, _ = chunk_log_probs(policy.action_distribution, policy, images, states, instructions,
                                        drawn.actions.numpy())
        torch.testing.assert_close(new, drawn.log_prob, rtol=0, atol=1e-3)  # PPO's ratio starts at 1
        scored[temperature] = (new, at_one)
    # Laplace(mu, t b): mean |a - mu| is t b, so a quarter of the spread ...
    assert spread[0.25] == pytest.approx(0.25 * spread[1.0], rel=0.2), spread
    # ... and its draws are scored differently at temperature 1 (the policy's own law).
    assert not torch.allclose(*scored[0.25], atol=1e-2)
    with pytest.raises(ValueError, match="temperature"):
        ChunkSampler(policy, temperature=0.0)


def test_a_correlated_sampler_keeps_each_steps_spread_correlates_neighbours_and_ppo_rescores_it(loaded):
    from world_env_training.models.vla import ChunkSampler
    from world_env_training.rl.loop import chunk_log_probs

    policy, _, _, start = loaded
    images, states = np.repeat(start.frame[None], 256, 0), np.repeat(start.state[None], 256, 0)
    instructions = [start.instruction] * 256
    independent = ChunkSampler(policy, sample=True, seed=3)(images, states, instructions)
    # correlation 0 is the policy's own law, draw for draw
    same = ChunkSampler(policy, sample=True, seed=3, correlation=0.0)(images, states, instructions)
    torch.testing.assert_close(same.actions, independent.actions, rtol=0, atol=0)
    drawn = ChunkSampler(policy, sample=True, seed=3, correlation=0.9)(images, states, instructions)

    def noise(sample):  # in units of the step's own scale, so that every step and dimension compare
        return ((sample.actions - sample.mu) / sample.log_scale.exp()).numpy()

    def neighbours(z):
        return float(np.corrcoef(z[:, :-1].reshape(-1), z[:, 1:].reshape(-1))[0, 1])

    assert abs(neighbours(noise(independent))) < 0.05
    assert neighbours(noise(drawn)) == pytest.approx(0.9, abs=0.05)
    # every step keeps Laplace's variance 2 b^2
    assert noise(drawn).std(axis=(0, 2)) == pytest.approx(np.full(drawn.actions.shape[1], np.sqrt(2)), rel=0.15)
    with torch.no_grad():
        new, _ = chunk_log_probs(policy.action_distribution, policy, images, states, instructions,
                                 drawn.actions.numpy(), correlation=0.9)
        independently, _ = chunk_log_probs(policy.action_distribution, policy, images, states, instructions,
                                           drawn.actions.numpy())
    torch.testing.assert_close(new, drawn.log_prob, rtol=0, atol=1e-3)  # PPO's ratio starts at 1
    assert not torch.allclose(new, independently, atol=1e-2)
    with pytest.raises(ValueError, match="correlation"):
        ChunkSampler(policy, correlation=1.0)


@pytest.mark.parametrize("correlation", [0.0, 0.5, 0.9])
def test_the_correlated_chunk_density_integrates_to_one(correlation):
    from world_env_training.models.vla import chunk_log_prob

    # two steps of one dimension, b = 1, on a grid wide enough to hold all but ~1e-6 of the mass
    grid = torch.linspace(-16, 16, 801, dtype=torch.float64)
    first, second = torch.meshgrid(grid, grid, indexing="ij")
    actions = torch.stack([first.reshape(-1), second.reshape(-1)], dim=1)[:, :, None]
    log_p = chunk_log_prob(actions, torch.zeros_like(actions), torch.zeros_like(actions), correlation)
    cell = float(grid[1] - grid[0]) ** 2
    assert float(log_p.exp().sum()) * cell == pytest.approx(1.0, abs=2e-3)
