"""reflector_node: the Instant Reflector on the wire, judging each camera frame of an episode.

Subscribes: ``camera/image_raw`` (Image, any size, rgb8/bgr8/rgba8/bgra8/mono8, sensor-data QoS;
the topic is the ``image_topic`` parameter) and ``instruction`` (String, reliable, from
transient_local publishers, whose last sample reaches a late start, and from volatile ones such as
``ros2 topic pub``; a different instruction starts a new episode; one longer than
``MAX_INSTRUCTION_CHARS`` is refused and frames are dropped until a valid one arrives). Publishes
``reflection`` (world_env_interfaces/Reflection, reliable), one per judged frame, with the
frame's header (stamp and frame_id), the frame's index in the episode, the episode id and the
threshold. Service ``~/reset`` (Trigger) starts a new episode (new id, step 0 again). The work is
done by ``world_env_reflector.scorer.ReflectorScorer``; this node converts messages.

Bad input (a frame that cannot be decoded, frames before any instruction) is dropped with its
reason logged once (again only after RELOG_S); nothing is published for it and the node goes
on. Configuration errors stop the node at start with exit code 2.
"""

from __future__ import annotations

import sys
import time

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from world_env_common.ros import qos
from world_env_common.ros.inputs import clip, instruction_problem, subscribe_latched
from world_env_common.ros.node_main import spin_until_signal
from world_env_common.ros.images import ImageError, image_to_rgb
from world_env_interfaces.msg import Reflection
from world_env_reflector.scorer import ReflectorScorer, ScorerLoadError, check_checkpoint

#: A reason for dropping frames is logged when first seen, and again only after this long.
RELOG_S = 60.0
#: Seconds between the debug lines with the scoring rate and latency.
RATE_REPORT_PERIOD_S = 5.0


class ConfigError(ValueError):
    """A parameter value the node cannot start with."""


class ReflectorNode(Node):
    def __init__(self):
        super().__init__("reflector")

        def declare(name, default, description, dynamic=False):
            descriptor = ParameterDescriptor(description=description, read_only=True, dynamic_typing=dynamic)
            try:
                return self.declare_parameter(name, default, descriptor).value
            except InvalidParameterTypeException as err:
                raise ConfigError(f"parameter {name}: {err}") from err

        checkpoint = declare("checkpoint", "", "reflector: a model folder or a train-reflector run folder "
                             "(its newest checkpoint)")
        threshold = declare("threshold", None, "termination threshold eta in (0, 1): done when R > eta "
                            "(unset: the checkpoint's)", dynamic=True)
        device = declare("device", "cpu", "where the reflector runs: cpu, cuda, cuda:N")
        threads = declare("torch_threads", 1, "torch intra-op threads (0: torch's default)")
        self.image_topic = declare("image_topic", "camera/image_raw", "camera image topic")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise ConfigError(f"parameter threshold must be a number, got {threshold!r}")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ConfigError(f"parameter threshold must be in (0, 1), got {threshold!r}")
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ConfigError(f"torch_threads must be an integer >= 0, got {threads!r}")
        if not isinstance(device, str) or not device:
            raise ConfigError(f"parameter device must be a device name, got {device!r}")
        reason = check_checkpoint(checkpoint)
        if reason:
            raise ConfigError(f"parameter checkpoint: {reason}")
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        t0 = time.monotonic()
        try:
            self.scorer = ReflectorScorer(checkpoint, device, None if threshold is None else float(threshold))
        except ScorerLoadError as err:
            raise ConfigError(str(err)) from err
        load_s = time.monotonic() - t0
        self._logged: dict[str, float] = {}
        self._done_logged_for = ""
        self._refused: str | None = None  # why the last instruction was refused
        self._scored_in_window = 0
        self._window_start = time.monotonic()

        self.reflection_pub = self.create_publisher(Reflection, "reflection", qos.COMMAND)
        self.create_subscription(Image, self.image_topic, self._on_image, qos.SENSOR)
        subscribe_latched(self, String, "instruction", self._on_instruction)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(RATE_REPORT_PERIOD_S, self._report_rates)
        self.get_logger().info(
            f"reflector node ready: checkpoint {checkpoint} (loaded in {load_s:.1f} s, input "
            f"{self.scorer.image_size} px) on {device}, threshold {self.scorer.threshold:g}, camera "
            f"'{self.image_topic}'")

    # ------------------------------------------------------------------ helpers
    def _drop(self, reason: str) -> None:
        """Log why a frame was dropped: each reason once, and again only after RELOG_S."""
        now = time.monotonic()
        if now - self._logged.get(reason, -RELOG_S) < RELOG_S:
            return
        self._logged[reason] = now
        if reason == "no instruction yet":
            self.get_logger().info("frames dropped: no instruction yet (publish one on 'instruction')")
        else:
            self.get_logger().warning(f"frame dropped: {clip(reason)}")

    # ------------------------------------------------------------------ inputs
    def _on_image(self, msg: Image) -> None:
        if self._refused:
            self._drop(self._refused)
            return
        try:
            rgb = image_to_rgb(msg)
        except ImageError as err:
            self._drop(f"bad camera input: {err}")
            return
        try:
            verdict = self.scorer.score(rgb)
        except ValueError as err:
            self._drop(str(err))
            return
        out = Reflection(header=msg.header, reward=verdict.reward, done=verdict.done,
                         threshold=self.scorer.threshold, step=verdict.step, episode_id=self.scorer.episode_id)
        self.reflection_pub.publish(out)
        self._scored_in_window += 1
        if verdict.done and self._done_logged_for != self.scorer.episode_id:  # the latch closed now
            self._done_logged_for = self.scorer.episode_id
            self.get_logger().info(f"episode {self.scorer.episode_id} done at step {verdict.step} "
                                   f"(reward {verdict.reward:.2f} > {self.scorer.threshold:g})")

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        self._refused = instruction_problem(text)
        if self._refused:
            self.scorer.clear()
            self.get_logger().warning(f"{self._refused}; frames are dropped until a valid instruction arrives")
            return
        if text == self.scorer.instruction:
            return  # the same instruction again (e.g. re-latched): the episode goes on
        if not text:
            self.scorer.clear()
            self.get_logger().warning("empty instruction: frames are dropped until an instruction arrives")
            return
        episode = self.scorer.reset(text)
        self.get_logger().info(f"instruction: '{text}': new episode {episode}")

    # ------------------------------------------------------------------ services
    def _on_reset(self, request, response):
        if not self.scorer.instruction:
            response.success, response.message = False, "no instruction yet: nothing to reset"
            return response
        episode = self.scorer.reset(self.scorer.instruction)
        response.success, response.message = True, f"new episode {episode}"
        self.get_logger().info(f"reset: new episode {episode} ('{self.scorer.instruction}')")
        return response

    def _report_rates(self) -> None:
        now = time.monotonic()
        elapsed, self._window_start = now - self._window_start, now
        mean = self.scorer.score_ms_mean
        self.get_logger().debug(f"scored {self._scored_in_window / elapsed:.1f} frames/s; "
                                f"{mean if mean is not None else float('nan'):.1f} ms per frame (mean)")
        self._scored_in_window = 0

    def summary(self) -> str:
        mean = self.scorer.score_ms_mean
        return (f"scored {self.scorer.frames_scored} frames"
                + (f", {mean:.1f} ms per frame (mean)" if mean is not None else ""))


def main(args=None) -> int:
    # A frame being scored is finished on SIGINT/SIGTERM.
    return spin_until_signal(ReflectorNode, "reflector_node", (ConfigError,), args,
                             on_shutdown=lambda node: node.get_logger().info(f"shut down: {node.summary()}"))


if __name__ == "__main__":
    sys.exit(main())
