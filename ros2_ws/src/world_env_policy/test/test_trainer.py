"""The LOOP trainer's episode protocol without ROS: ``GraphLoopRunner`` against a scripted graph,
with a real ``OnlineLOOP`` on tiny random models."""

import threading

import numpy as np
import pytest

from world_env_policy.trainer import EpisodeRecorder, GraphLoopRunner


class ScriptedGraph:
    """Plays episodes the way the ROS graph would: once the policy is enabled, chunks stamped after
    the reset arrive, then the reflector's verdict. The first episode never ends (a stall)."""

    def __init__(self, recorder, checkpoint):
        self.recorder, self.checkpoint = recorder, checkpoint
        self.calls, self.statuses, self.resets = [], [], 0
        self.stamp = 0.0

    def enable_policy(self, enabled):
        self.calls.append(("enable", enabled))
        if enabled and self.resets > 1:
            threading.Thread(target=self._play, daemon=True).start()

    def _play(self):
        rec, image = self.recorder, np.zeros((16, 16, 3), np.uint8)
        chunk = np.zeros((4, 7), np.float32)
        # Stale messages: from before the reset, and of other weights. Both must be ignored.
        rec.on_chunk(self.stamp - 1.0, self.checkpoint, "pick up the soup", lambda: image, np.zeros(7), chunk, 0.0)
        rec.on_chunk(self.stamp + 0.1, "other/weights", "pick up the soup", lambda: image, np.zeros(7), chunk, 0.0)
        fired = self.resets % 2 == 0
        for i in range(2):
            rec.on_chunk(self.stamp + 0.2 + i, self.checkpoint, "pick up the soup", lambda: image, np.zeros(7),
                         chunk, -1.5)
            rec.on_reflection(self.stamp + 0.3 + i, 0.9 if fired and i == 1 else 0.2, fired and i == 1)
        if not fired:  # a third chunk arriving means the two allowed ones ran: the step limit
            rec.on_chunk(self.stamp + 3.0, self.checkpoint, "pick up the soup", lambda: image, np.zeros(7), chunk, 0.0)

    def reset_simulator(self, index):
        self.resets += 1
        self.stamp = 100.0 * self.resets
        self.calls.append(("reset_simulator", index))
        return self.stamp, "pick up the soup"

    def reset_reflector(self):
        self.calls.append(("reset_reflector",))

    def reset_policy(self):
        self.calls.append(("reset_policy",))

    def policy_checkpoint(self):
        return self.checkpoint

    def hand_checkpoint(self, path):
        self.calls.append(("hand_checkpoint", path))
        self.checkpoint = path

    def publish_status(self, status):
        self.statuses.append(status)


@pytest.fixture
def core(tmp_path):
    import torch

    from world_env_training.configs import PostTrainConfig
    from world_env_training.rl.online_loop import OnlineLOOP
    from world_env_training.tiny import write_artifacts

    torch.set_num_threads(1)
    paths = write_artifacts(tmp_path / "artifacts", threshold=0.9)
    return OnlineLOOP(PostTrainConfig(policy=paths["policy"], demos=paths["demos"], output_dir=str(tmp_path / "run"),
                                      rollouts_per_state=2, batch_size=1, updates=1, max_steps=8))


def test_runner_plays_the_protocol_reruns_a_stalled_episode_and_hands_over_the_update(core):
    recorder = EpisodeRecorder()
    graph = ScriptedGraph(recorder, core.checkpoint)
    logs = []
    runner = GraphLoopRunner(core, graph, recorder, starts=3, timeout_s=1.0, log=lambda *a: logs.append(a))
    runner.run()

    assert core.update_count == 1 and not [line for line in logs if line[0] == "error"], logs
    # Three resets for two episodes: the first stalled, timed out and was run again.
    assert graph.resets == 3 and runner.episodes_run == 2
    assert any(level == "warning" and "timed out" in text for level, text in logs)
    per_episode = [("enable", False), ("reset_simulator",), ("reset_reflector",), ("reset_policy",), ("enable", True)]
    first = [c[:1] if c[0] == "reset_simulator" else c for c in graph.calls[:5]]
    assert first == per_episode
    # The update's checkpoint is handed to the policy, then reported.
    handed = [c for c in graph.calls if c[0] == "hand_checkpoint"]
    assert handed == [("hand_checkpoint", core.checkpoint)] and core.checkpoint.endswith("step_0000001")
    assert graph.statuses[-1]["update"] == 1 and graph.statuses[-1]["last"]["episodes"] == 2


def test_recorder_keeps_only_the_episodes_own_messages_and_its_verdict():
    from world_env_training.rl.online_loop import Episode

    recorder = EpisodeRecorder()
    recorder.begin(Episode(instruction="open the drawer"), start_stamp=10.0, max_chunks=2, checkpoint="w1")
    image = np.zeros((4, 4, 3), np.uint8)
    converted = []
    args = (lambda: converted.append(1) or image, np.zeros(7), np.zeros((4, 7)), -2.0)
    recorder.on_chunk(9.0, "w1", "open the drawer", *args)         # before the reset
    recorder.on_chunk(10.5, "w0", "open the drawer", *args)        # other weights
    recorder.on_chunk(10.5, "w1", "close the drawer", *args)       # another task
    recorder.on_chunk(10.5, "w1", "open the drawer", *args)
    recorder.on_reflection(9.5, 0.99, True)                        # a verdict on an old frame
    assert not recorder.fired.is_set() and len(recorder.episode.actions) == 1 and converted == [1]
    recorder.on_reflection(10.6, 0.7, True)
    assert recorder.wait(0.1, threading.Event())
    episode = recorder.finish()
    assert episode.fired and episode.ret == pytest.approx(0.7) and episode.published_log_probs == [-2.0]
    with pytest.raises(RuntimeError, match="shutting down"):
        recorder.begin(Episode(instruction="x"), 0.0, 1, "w1")
        stop = threading.Event()
        stop.set()
        recorder.wait(5.0, stop)
