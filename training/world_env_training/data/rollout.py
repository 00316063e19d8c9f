"""Recording episodes in real LIBERO, and Laplace exploration noise around a policy."""

from __future__ import annotations

import zlib

import numpy as np

from world_env_training.data.dataset import Episode


def episode_seed(seed: int, suite: str, task_id: int, index: int) -> int:
    """A stable per-episode seed: the same run settings always draw the same noise."""
    return int(np.random.SeedSequence([seed, zlib.crc32(suite.encode()), task_id, index]).generate_state(1)[0])


class LaplaceExploration:
    """Actions a ~ Laplace(mu, b) around a policy's action mu, clipped to LIBERO's [-1, 1].

    ``b`` is fixed here (``scale``); a policy with a scale head samples its own b instead.
    The chosen mean and scale are kept per step so an episode records its sampling
    distribution (``extras``: action_mean, action_scale).
    """

    def __init__(self, policy, scale: float, rng: np.random.Generator):
        self.policy, self.scale, self.rng = policy, float(scale), rng
        self.means: list[np.ndarray] = []

    @property
    def done(self) -> bool:
        return self.policy.done

    def reset(self, env) -> None:
        self.means = []
        self.policy.reset(env)

    def act(self, obs: dict) -> np.ndarray:
        mu = np.asarray(self.policy.act(obs), dtype=float)
        self.means.append(mu)
        if self.scale == 0:
            return mu
        return np.clip(mu + self.rng.laplace(0.0, self.scale, size=mu.shape), -1.0, 1.0)


def record_episode(env, policy, init_state_id: int, *, source: str, seed: int,
                   post_success_steps: int = 0, max_steps: int = 0) -> Episode:
    """Run ``policy`` from LIBERO init state ``init_state_id`` and record everything.

    The episode ends ``post_success_steps`` steps after the task is first achieved (frames
    after success are positive examples for the reflector), or at the suite's step limit
    (``max_steps``, if positive, shortens it).
    Per-frame labels are 0 before the task is achieved and 1 from then on.
    """
    obs = env.reset(init_state_id)
    policy.reset(env)
    frames, states, joints, actions, labels = [obs["image"]], [obs["state"]], [obs["joint_positions"]], [], [0]
    achieved_at = None
    for t in range(min(max_steps or env.max_steps, env.max_steps)):
        action = np.asarray(policy.act(obs), dtype=float)
        obs, success = env.step(action)
        actions.append(action)
        frames.append(obs["image"])
        states.append(obs["state"])
        joints.append(obs["joint_positions"])
        if success and achieved_at is None:
            achieved_at = t + 1
        labels.append(int(achieved_at is not None))
        if achieved_at is not None and t + 1 - achieved_at >= post_success_steps:
            break
    extras = {}
    if isinstance(policy, LaplaceExploration):
        extras = {"action_mean": np.array(policy.means, dtype=np.float32),
                  "action_scale": np.full((len(actions), 7), policy.scale, dtype=np.float32)}
    return Episode(frames=np.stack(frames), actions=np.array(actions, dtype=np.float32),
                   states=np.array(states, dtype=np.float32), joint_positions=np.array(joints, dtype=np.float32),
                   success=np.array(labels, dtype=np.uint8), instruction=env.instruction, suite=env.suite,
                   task_id=env.task_id, init_state_id=int(init_state_id), camera=env.camera.to_dict(),
                   source=source, seed=int(seed), extras=extras)
