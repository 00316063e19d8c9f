"""Policies that ``evaluate`` and ``explore`` can run: built-ins by name, or a checkpoint folder.

A policy has ``reset(env)`` (called after ``env.reset``), ``act(obs) -> (7,) action`` and a
``done`` flag: its own judgement that the task is finished, used to stop episodes under the
self-termination protocol.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BUILT_IN = ("expert", "zero")


class ZeroPolicy:
    """All-zero actions: the arm holds still, the gripper keeps its state. Never done."""

    done = False

    def reset(self, env) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        return np.zeros(7)


class ExpertPolicy:
    """The scripted expert, reading the simulator's privileged state (object poses)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.env = self.expert = None

    def reset(self, env) -> None:
        from world_env_training.experts import make_expert

        self.env = env
        self.expert = make_expert(env.raw.env, self.rng)  # the BDDL problem env inside the wrapper

    @property
    def done(self) -> bool:
        return self.expert.done

    def act(self, obs: dict) -> np.ndarray:
        return self.expert.act(self.env.raw_obs)


def make_policy(spec: str, seed: int = 0, device: str = "cpu"):
    """``expert``, ``zero``, or a policy checkpoint folder."""
    if spec == "zero":
        return ZeroPolicy()
    if spec == "expert":
        return ExpertPolicy(seed)
    if not Path(spec).is_dir():
        raise FileNotFoundError(f"policy '{spec}' is neither a checkpoint folder nor a built-in "
                                f"policy ({', '.join(BUILT_IN)})")
    raise ValueError(f"policy checkpoint {spec}: VLA checkpoints load once the policy is built (issue 4)")
