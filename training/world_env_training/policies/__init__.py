"""Policies that ``evaluate`` and ``explore`` can run: built-ins by name, or a checkpoint folder.

A policy has ``reset(env)`` (called after ``env.reset``), ``act(obs) -> (7,) action``, a
``done`` flag (its own judgement that the task is finished, used to stop episodes under the
self-termination protocol) and ``wants_frame``: whether its next ``act`` reads ``obs["image"]``,
so that the simulator renders only frames that are read.

A checkpoint folder (a VLA model folder, or a ``train-sft`` run folder: its newest checkpoint)
loads as ``VLAChunkPolicy``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BUILT_IN = ("expert", "zero")
#: Built-ins that read the simulator's privileged state (object poses), not the camera.
PRIVILEGED = ("expert",)


class ZeroPolicy:
    """All-zero actions: the arm holds still, the gripper keeps its state. Never done.

    Also a one-step chunk policy (``chunk_size``, ``predict``) for the ROS policy node's dry runs.
    """

    done = False
    chunk_size = 1
    wants_frame = False  # reads no camera frame
    deterministic = True  # the same episode from the same state (evaluation relies on it)

    def reset(self, env) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        return np.zeros(7)

    def predict(self, image: np.ndarray, state: np.ndarray, instruction: str) -> np.ndarray:
        return np.zeros((1, 7))


class ExpertPolicy:
    """The scripted expert, reading the simulator's privileged state (object poses)."""

    wants_frame = False  # reads object poses, not the camera
    deterministic = False  # its noise draws carry over from one episode to the next

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.env = self.expert = None

    def reset(self, env) -> None:
        from world_env_training.policies.experts import make_expert

        self.env = env
        self.expert = make_expert(env.raw.env, self.rng)  # the BDDL problem env inside the wrapper

    @property
    def done(self) -> bool:
        return self.expert.done

    def act(self, obs: dict) -> np.ndarray:
        return self.expert.act(self.env.raw_obs)


class VLAChunkPolicy:
    """A ``VLAPolicy`` driven as OpenVLA-OFT does: every ``chunk_size`` steps it predicts a chunk
    from the current frame, state and the env's instruction, then executes it open-loop.

    Chunks come from ``ChunkSampler``: the means, or with ``sample=True`` draws from the policy's
    Laplace law at ``temperature`` and ``correlation`` (seeded by ``seed``; ``reseed`` restarts
    them), clipped to LIBERO's [-1, 1] when executed. ``last`` is the newest ``ChunkSample``
    (its log-probability is the one LOOP would record). ``done`` is always False: the policy has
    no stop signal (a reflector supplies one).
    """

    done = False

    def __init__(self, model, sample: bool = False, seed: int = 0, temperature: float = 1.0,
                 correlation: float = 0.0):
        from world_env_training.models.vla import ChunkSampler

        self.model = model
        self.sampler = ChunkSampler(model, sample=sample, seed=seed, temperature=temperature,
                                    correlation=correlation)
        self.instruction = ""
        self.queue: list[np.ndarray] = []
        self.replans = 0
        self.last = None
        self.deterministic = not sample  # chunk means: the same episode from the same state

    @property
    def wants_frame(self) -> bool:
        """Whether the next ``act`` reads ``obs["image"]`` (it does only at chunk boundaries)."""
        return not self.queue

    def reset(self, env) -> None:
        self.instruction = env.instruction
        self.queue = []

    def reseed(self, seed: int) -> None:
        """Restart the draws from ``seed``: the episode that follows no longer depends on earlier ones."""
        self.sampler.generator.manual_seed(int(seed))

    def act(self, obs: dict) -> np.ndarray:
        if not self.queue:
            self.last = self.sampler(obs["image"][None], obs["state"][None], [self.instruction])
            self.queue = list(self.last.executed()[0])
            self.replans += 1
        return self.queue.pop(0)


def make_policy(spec: str, seed: int = 0, device: str = "cpu", sample: bool = False, temperature: float = 1.0,
                correlation: float = 0.0):
    """``expert``, ``zero``, or a policy checkpoint folder (VLA model or ``train-sft`` run).
    ``sample``: a checkpoint policy draws its chunks from its Laplace law instead of the means,
    at ``temperature`` and ``correlation`` (``ChunkSampler``)."""
    if spec == "zero":
        return ZeroPolicy()
    if spec == "expert":
        return ExpertPolicy(seed)
    if not Path(spec).is_dir():
        raise FileNotFoundError(f"policy '{spec}' is neither a checkpoint folder nor a built-in "
                                f"policy ({', '.join(BUILT_IN)})")
    from world_env_training.models.backbones import resolve_device
    from world_env_training.models.vla import VLAPolicy

    return VLAChunkPolicy(VLAPolicy.from_pretrained(spec, device=resolve_device(device)), sample=sample, seed=seed,
                          temperature=temperature, correlation=correlation)
