"""The LOOP trainer's episode protocol, without ROS: ``loop_trainer_node`` is its adapter.

``EpisodeRecorder`` collects one episode from what the graph publishes: the policy's chunks (each
with the observation it came from and its log-likelihood) and the reflector's verdicts, keeping
only messages stamped from the episode's reset on, of the checkpoint the policy should be
running and of the episode's instruction. It ends at the reflector's done, or once ``max_chunks``
chunks have run (the next chunk arriving means the previous ones were all executed).

``GraphLoopRunner`` runs the updates: for each, the initial states that ``draw_starts`` picks
(post-train's rule); ``rollouts_per_state`` episodes each (disable the policy, reset simulator,
reflector and policy, enable it, wait for the end; an episode that times out is run again);
then the ``OnlineLOOP`` update, and the new checkpoint handed to the policy before the next
rollouts. A resumed run first makes sure the policy runs the resumed weights.

The graph is anything with ``TrainerGraph``'s methods: the node (services and parameters over
DDS), or a fake in tests.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Protocol

import numpy as np


class TrainerGraph(Protocol):
    """What the runner asks of the node graph; every call blocks until done or raises RuntimeError."""

    def enable_policy(self, enabled: bool) -> None: ...

    def reset_simulator(self, index: int) -> tuple[float, str]:
        """Reset the simulator to start ``index``; returns (o_0's stamp in seconds, instruction)."""

    def reset_reflector(self) -> None: ...

    def reset_policy(self) -> None: ...

    def policy_checkpoint(self) -> str | None:
        """The checkpoint the policy reports running (None before its first status)."""

    def hand_checkpoint(self, path: str) -> None:
        """Make the policy run ``path`` and wait until it reports doing so."""

    def publish_status(self, status: dict) -> None: ...


class EpisodeRecorder:
    """The episode being recorded (module docstring); thread-safe: callbacks feed it, the runner waits."""

    def __init__(self):
        self.lock = threading.Lock()
        self.episode = None
        self.start = math.inf
        self.max_chunks = 0
        self.checkpoint: str | None = None
        self.last_reward: float | None = None
        self.fired = threading.Event()
        self.limit = threading.Event()

    def begin(self, episode, start_stamp: float, max_chunks: int, checkpoint: str) -> None:
        with self.lock:
            self.episode, self.start, self.max_chunks, self.checkpoint = episode, start_stamp, max_chunks, checkpoint
            self.last_reward = None
            self.fired.clear()
            self.limit.clear()

    def clear(self) -> None:
        with self.lock:
            self.episode = None

    def on_chunk(self, stamp: float, checkpoint: str, instruction: str, image_fn: Callable[[], np.ndarray],
                 state, actions: np.ndarray, log_prob: float) -> None:
        """A published chunk; ``image_fn`` converts its image only if the chunk is kept."""
        with self.lock:
            if self.episode is None or stamp < self.start:
                return
            if checkpoint != self.checkpoint or instruction != self.episode.instruction:
                return
            if len(self.episode.actions) >= self.max_chunks:
                self.limit.set()  # the previous chunks have all been executed
                return
            self.episode.add_chunk(image_fn(), state, actions, log_prob)

    def on_reflection(self, stamp: float, reward: float, done: bool) -> None:
        with self.lock:
            if self.episode is None or stamp < self.start:
                return
            self.last_reward = float(reward)
            if done:
                self.fired.set()

    def wait(self, timeout_s: float, stop: threading.Event, poll_s: float = 0.02) -> bool:
        """Wait for the episode's end; False if ``timeout_s`` passed first. RuntimeError on ``stop``."""
        end = time.monotonic() + timeout_s
        while not (self.fired.is_set() or self.limit.is_set()):
            if stop.is_set():
                raise RuntimeError("shutting down")
            if time.monotonic() > end:
                return False
            time.sleep(poll_s)
        return True

    def finish(self):
        """The recorded episode, with its return (the last reward) and whether the reflector fired."""
        with self.lock:
            episode, self.episode = self.episode, None
            episode.fired = self.fired.is_set()
            episode.ret = self.last_reward if self.last_reward is not None else 0.0
        return episode


class GraphLoopRunner:
    """LOOP updates from episodes the graph plays (module docstring).

    core: ``OnlineLOOP``; starts: how many initial states the start dataset has; timeout_s: wall
    time an episode may take before it is run again; log(level, text): where progress goes.
    """

    def __init__(self, core, graph: TrainerGraph, recorder: EpisodeRecorder, starts: int, timeout_s: float,
                 log: Callable[[str, str], None], stop: threading.Event | None = None):
        self.core, self.graph, self.recorder = core, graph, recorder
        self.cfg = core.cfg
        self.starts, self.timeout_s, self.log = starts, timeout_s, log
        self.stop = stop or threading.Event()
        self.expected_checkpoint = core.checkpoint
        self.episodes_run = 0

    def status(self, record: dict | None = None) -> dict:
        status = {"update": self.core.update_count, "updates": self.cfg.updates, "episodes": self.episodes_run,
                  "checkpoint": self.core.checkpoint, "done": self.core.done}
        if record is not None:
            status["last"] = record
        return status

    def hand_checkpoint(self, path: str) -> None:
        self.graph.hand_checkpoint(path)
        self.expected_checkpoint = path

    def run_episode(self, index: int):
        """One episode from start ``index``; None if it timed out (to be run again)."""
        from world_env_training.rl.online_loop import Episode

        self.graph.enable_policy(False)
        self.recorder.clear()
        stamp, instruction = self.graph.reset_simulator(index)
        self.graph.reset_reflector()
        self.graph.reset_policy()
        chunk = int(self.core.model.config.chunk_size)
        self.recorder.begin(Episode(instruction=instruction), stamp, math.ceil(self.cfg.max_steps / chunk),
                            self.expected_checkpoint)
        self.graph.enable_policy(True)
        if not self.recorder.wait(self.timeout_s, self.stop):
            self.log("warning", f"episode from start {index} timed out after {self.timeout_s:.0f} s; running it again")
            return None
        self.graph.enable_policy(False)
        self.episodes_run += 1
        return self.recorder.finish()

    def run(self) -> None:
        """Run updates until ``cfg.updates`` (or ``stop``); errors are logged, not raised."""
        from world_env_training.rl.loop_runner import draw_starts  # post-train's rule: same states per update

        try:
            if self.graph.policy_checkpoint() != self.core.checkpoint:
                self.hand_checkpoint(self.core.checkpoint)  # a resumed run
            while not self.core.done and not self.stop.is_set():
                picks = draw_starts(self.starts, self.cfg.batch_size, self.cfg.seed, self.core.update_count)
                for group, index in enumerate(picks):
                    done = 0
                    while done < self.cfg.rollouts_per_state:
                        episode = self.run_episode(int(index))
                        if episode is not None:
                            self.core.add_episode(group, episode)
                            done += 1
                        self.graph.publish_status(self.status())
                record = self.core.update()
                self.log("info", f"LOOP update {record['update']}: return {record['return_mean']:.3f}, "
                                 f"fired {record['fired_rate']:.2f}, {record['chunks']} chunks; "
                                 f"handing {self.core.checkpoint} to the policy node")
                self.hand_checkpoint(self.core.checkpoint)
                self.graph.publish_status(self.status(record))
            self.log("info", f"LOOP finished: {self.core.update_count} updates in {self.cfg.output_dir}")
        except RuntimeError as err:
            if not self.stop.is_set():
                self.log("error", f"LOOP trainer stopped: {err}")
