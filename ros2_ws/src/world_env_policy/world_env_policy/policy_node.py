"""policy_node: the VLA policy on the wire, commanding an arm as its ros2_control controllers take it.

Subscribes: ``camera/image_raw`` (Image, any size, rgb8/bgr8/rgba8/bgra8/mono8, sensor-data QoS;
the topic is the ``image_topic`` parameter), ``joint_states`` (JointState, sensor-data QoS),
``instruction`` (String, reliable, from transient_local publishers, whose last sample reaches a
late start, and from volatile ones such as ``ros2 topic pub``; longer than
``MAX_INSTRUCTION_CHARS`` is refused and stops the commands until a good one arrives),
``reflection`` (world_env_interfaces/Reflection, reliable) and, if ``success_topic`` is set,
a Bool task-success topic (reliable). Publishes at ``control_rate_hz``:
``arm_controller/joint_trajectory`` and ``gripper_controller/joint_trajectory`` (JointTrajectory,
one point one control period ahead, reliable), and ``~/status`` (String, JSON; reliable,
transient local), and ``~/chunk`` (world_env_interfaces/ActionChunk, reliable: every chunk the
policy predicts, with the image, state and instruction it came from, and its log-likelihood; what
the LOOP trainer node learns from). Parameter ``sample`` (read-only, default false): draw each
chunk from the policy's Laplace law instead of taking its mean (imagined-mode exploration).
Services ``~/enable`` (SetBool), ``~/reset`` (Trigger). The work is done by
``world_env_policy.controller.PolicyController``; this node converts messages and keeps time.

Safety: starts disabled; disabling, termination, stale or bad inputs and shutdown all stop the
commands (nothing further is published; the controllers hold the last point, at most one action
step from where the arm was). Configuration errors stop the node at start with exit code 2.
"""

from __future__ import annotations

import json
import sys
import time

from builtin_interfaces.msg import Duration
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration as RclpyDuration
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from world_env_common.robot import DEFAULT_FINGER_JOINT_NAMES, DEFAULT_JOINT_NAMES
from world_env_common.ros import qos
from world_env_common.ros.inputs import clip, instruction_problem, subscribe_latched
from world_env_common.ros.node_main import spin_until_signal
from world_env_common.ros.images import ImageError, image_to_rgb, rgb_to_image
from world_env_interfaces.msg import ActionChunk, Reflection
from world_env_policy.controller import (BUILT_IN, Command, ControllerConfig, PolicyController, PolicyLoadError,
                                         check_checkpoint, load_policy)

#: Seconds (on the node's clock: sim time in imagined mode) between the debug lines with the
#: achieved rates (and the warning if too slow).
RATE_REPORT_PERIOD_S = 5.0
#: Wall-clock seconds between checks for a finished background load.
SWAP_POLL_S = 0.05
#: Seconds between status messages when nothing changes (changes are published at once).
STATUS_PERIOD_S = 0.5
#: A reason for not commanding is logged when it starts, and again only after this long.
RELOG_S = 60.0
#: Refusals that are operating states rather than problems: logged at info level.
INFO_REASONS = ("disabled", "episode terminated", "no policy loaded")


class ConfigError(ValueError):
    """A parameter value the node cannot start with."""


def _seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _duration(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _trajectory(names, positions, seconds: float) -> JointTrajectory:
    # header.stamp zero: the controller starts the trajectory on receipt.
    return JointTrajectory(joint_names=list(names), points=[JointTrajectoryPoint(
        positions=[float(p) for p in positions], time_from_start=_duration(seconds))])


class PolicyNode(Node):
    def __init__(self):
        super().__init__("policy")

        def declare(name, default, description, read_only=True, dynamic=False):
            descriptor = ParameterDescriptor(description=description, read_only=read_only, dynamic_typing=dynamic)
            try:
                return self.declare_parameter(name, default, descriptor).value
            except InvalidParameterTypeException as err:
                raise ConfigError(f"parameter {name}: {err}") from err

        def number(name, default, description):
            value = declare(name, default, description, dynamic=True)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"parameter {name} must be a number, got {value!r}")
            return float(value)

        def numbers(name, default, description):
            value = declare(name, list(default), description, dynamic=True)
            if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                           for v in value):
                raise ConfigError(f"parameter {name} must be a list of numbers, got {value!r}")
            return [float(v) for v in value]

        defaults = ControllerConfig()
        checkpoint = declare("checkpoint", "", "policy: a VLA model folder, a train-sft run folder (its newest "
                             "checkpoint) or 'zero'; setting it at run time hot-loads the weights", read_only=False)
        enabled = declare("enabled", False, "send commands (false at start: enable once the arm is ready)",
                          read_only=False)
        device = declare("device", defaults.device, "where the policy runs: cpu, cuda, cuda:N, auto")
        threads = declare("torch_threads", 1, "torch intra-op threads (0: torch's default)")
        self.image_topic = declare("image_topic", "camera/image_raw", "camera image topic")
        success_topic = declare("success_topic", "", "Bool task-success topic ending the episode ('' : none)")
        self.sample = declare("sample", False, "draw chunks from the policy's Laplace law instead of its mean")
        try:
            config = ControllerConfig(
                joint_names=declare("joint_names", list(DEFAULT_JOINT_NAMES), "the 7 arm joint names"),
                finger_joint_names=declare("finger_joint_names", list(DEFAULT_FINGER_JOINT_NAMES),
                                           "the 2 finger joint names"),
                control_rate_hz=number("control_rate_hz", defaults.control_rate_hz,
                                       "commands per second (LIBERO's control frequency is 20)"),
                stale_after_s=number("stale_after_s", defaults.stale_after_s,
                                     "no command when the newest camera frame or joint state is older (s)"),
                workspace_min=numbers("workspace_min", defaults.workspace_min,
                                      "lower corner of the end-effector box, robot base frame (m)"),
                workspace_max=numbers("workspace_max", defaults.workspace_max,
                                      "upper corner of the end-effector box, robot base frame (m)"),
                base_position=numbers("base_position", defaults.base_position,
                                      "robot base position in the policy's state frame (m)"),
                base_quat_wxyz=numbers("base_quat_wxyz", defaults.base_quat_wxyz,
                                       "robot base orientation in the policy's state frame (wxyz)"),
                max_joint_step_rad=number("max_joint_step_rad", defaults.max_joint_step_rad,
                                          "refuse a step that moves any joint more than this (rad)"),
                device=device)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if not isinstance(threads, int) or threads < 0:
            raise ConfigError(f"torch_threads must be an integer >= 0, got {threads!r}")
        self.torch_threads = threads
        reason = check_checkpoint(checkpoint)
        if reason:
            raise ConfigError(f"parameter checkpoint: {reason}")
        t0 = time.monotonic()
        try:
            policy = self._load(checkpoint, device)
        except PolicyLoadError as err:
            raise ConfigError(str(err)) from err
        load_s = time.monotonic() - t0
        self.controller = PolicyController(config, policy, checkpoint, loader=self._load)
        self.controller.set_enabled(enabled, self._now())
        self._reverting = False
        self._logged: dict[str, float] = {}
        self._last_reason: str | None = "not started"
        self._last_status: tuple | None = None
        self._status_sent = 0.0

        self.arm_pub = self.create_publisher(JointTrajectory, "arm_controller/joint_trajectory", qos.COMMAND)
        self.gripper_pub = self.create_publisher(JointTrajectory, "gripper_controller/joint_trajectory", qos.COMMAND)
        self.status_pub = self.create_publisher(String, "~/status", qos.LATCHED)
        self.chunk_pub = self.create_publisher(ActionChunk, "~/chunk", qos.COMMAND)
        self._image_header = None  # of the newest good frame: the chunk's observation
        self.create_subscription(Image, self.image_topic, self._on_image, qos.SENSOR)
        self.create_subscription(JointState, "joint_states", self._on_joint_state, qos.SENSOR)
        subscribe_latched(self, String, "instruction", self._on_instruction)
        self.create_subscription(Reflection, "reflection", self._on_reflection, qos.COMMAND)
        if success_topic:
            self.create_subscription(Bool, success_topic, self._on_success, qos.COMMAND)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self._ticks = self._commands = 0
        # From the first tick: on sim time the clock jumps from 0 to the simulator's time first.
        self._window_start: float | None = None
        self.create_timer(1.0 / config.control_rate_hz, self._on_tick)
        self.create_timer(RATE_REPORT_PERIOD_S, self._report_rates)
        # Loaded weights are swapped in on the wall clock too: on sim time the ticks stop while the
        # simulator waits, and the LOOP trainer resets the simulator only once the swap is done.
        self.create_timer(SWAP_POLL_S, self._swap_loaded, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._publish_status(force=True)
        self.get_logger().info(
            f"policy node ready: checkpoint {checkpoint} (loaded in {load_s:.1f} s, chunk {policy.chunk_size}) on "
            f"{device}, control at {config.control_rate_hz:g} Hz, camera '{self.image_topic}', "
            f"{'enabled' if enabled else 'disabled (enable with ~/enable)'}")

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _load(self, spec: str, device: str):
        if spec not in BUILT_IN and self.torch_threads > 0:
            import torch

            torch.set_num_threads(self.torch_threads)
        return load_policy(spec, device, sample=self.sample)

    def _log_reason(self, reason: str | None) -> None:
        """Log a change of what the node does, each reason at most once per RELOG_S."""
        previous = self._last_reason
        if reason == previous:
            return
        self._last_reason = reason
        key = reason or f"commanding after: {previous}"
        now = time.monotonic()
        if now - self._logged.get(key, -RELOG_S) < RELOG_S:
            return
        self._logged[key] = now
        if reason is None:
            self.get_logger().info(f"commanding the arm ({clip(self.controller.checkpoint)}, instruction "
                                   f"'{self.controller.instruction}'; before: {clip(previous)})")
        elif reason.startswith(INFO_REASONS):
            self.get_logger().info(f"not commanding: {clip(reason)}")
        else:
            self.get_logger().warning(f"not commanding: {clip(reason)}")

    def _publish_status(self, force: bool = False, **extra) -> None:
        status = self.controller.status()
        key = (status["enabled"], status["reason"], status["checkpoint"], status["loading"], status["load_error"])
        now = time.monotonic()
        if not force and key == self._last_status and now - self._status_sent < STATUS_PERIOD_S:
            return
        self._last_status, self._status_sent = key, now
        status.update(extra)
        self.status_pub.publish(String(data=json.dumps(status)))

    # ------------------------------------------------------------------ inputs
    def _on_image(self, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg)
        except ImageError as err:
            self.controller.image_error(str(err), self._now())
            return
        self.controller.on_image(rgb, self._now())
        self._image_header = msg.header

    def _on_joint_state(self, msg: JointState) -> None:
        self.controller.on_joint_state(msg.name, msg.position, self._now())

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        problem = instruction_problem(text)
        if problem:
            self.get_logger().warning(f"{problem}; no commands until a valid instruction arrives")
            self.controller.instruction_error(problem)
            self._publish_status(force=True)
            return
        if text != self.controller.instruction:
            self.get_logger().info(f"instruction: '{text}'")
        self.controller.on_instruction(text)

    def _on_reflection(self, msg: Reflection) -> None:
        if self.controller.on_reflection(msg.done, _seconds(msg.header.stamp), msg.episode_id, msg.reward):
            self.get_logger().info(f"episode terminated by the reflector (reward {msg.reward:.2f}, step {msg.step})")
            self._publish_status(force=True)

    def _on_success(self, msg: Bool) -> None:
        if self.controller.on_success(msg.data):
            self.get_logger().info("episode terminated: task success reported")
            self._publish_status(force=True)

    # ------------------------------------------------------------------ services and parameters
    def _on_enable(self, request, response):
        result = self.set_parameters([Parameter("enabled", value=bool(request.data))])[0]
        response.success = result.successful
        response.message = result.reason or ("enabled: a new episode starts" if request.data else "disabled")
        return response

    def _on_reset(self, request, response):
        self.controller.reset(self._now())
        self._publish_status(force=True)
        response.success, response.message = True, "episode reset: termination and action queue cleared"
        self.get_logger().info(response.message)
        return response

    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "enabled" and p.type_ != Parameter.Type.BOOL:
                return SetParametersResult(successful=False, reason="enabled must be a bool")
            if p.name == "checkpoint" and not self._reverting:
                if p.type_ != Parameter.Type.STRING:
                    return SetParametersResult(successful=False, reason="checkpoint must be a string")
                reason = check_checkpoint(p.value)
                if reason is None and self.controller.loading is not None:
                    reason = f"still loading {self.controller.loading}; try again when it is done"
                if reason:
                    self.get_logger().warning(f"checkpoint {clip(repr(p.value))} rejected: {clip(reason)}")
                    return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        for p in params:
            if p.name == "enabled":
                was_enabled = self.controller.enabled
                self.controller.set_enabled(p.value, self._now())
                if p.value:
                    self.get_logger().info("enabled: a new episode starts")
                elif was_enabled:  # disabling a disabled node (the trainer does, per episode) changes nothing
                    self.get_logger().info("disabled: commands stop")
            elif p.name == "checkpoint" and not self._reverting:
                try:
                    self.controller.load(p.value)
                except PolicyLoadError as err:  # a race with another load; reported, nothing changes
                    self.get_logger().error(f"checkpoint {clip(repr(p.value))} not loaded: {clip(str(err))}")
                else:
                    self.get_logger().info(f"loading {clip(p.value)} in the background; "
                                           f"{clip(self.controller.checkpoint)} keeps running until it is ready")
        self._publish_status(force=True)

    def _handle_load_events(self) -> None:
        for event in self.controller.take_load_events():
            if event.ok:
                self.get_logger().info(f"hot-swapped the policy: {clip(event.message)}")
            else:
                self.get_logger().error(f"{clip(event.message)}; keeping {clip(self.controller.checkpoint)}")
                self._reverting = True  # the parameter shows what runs
                try:
                    self.set_parameters([Parameter("checkpoint", value=self.controller.checkpoint)])
                finally:
                    self._reverting = False
            self._publish_status(force=True)

    def _swap_loaded(self) -> None:
        self.controller.swap()
        self._handle_load_events()

    # ------------------------------------------------------------------ control loop
    def _on_tick(self) -> None:
        now = self._now()
        if self._window_start is None:
            self._window_start = now
        result = self.controller.tick(now)
        self._ticks += 1
        self._handle_load_events()
        chunk = self.controller.take_chunk()
        if chunk is not None:
            self._publish_chunk(chunk)
        if isinstance(result, Command):
            self.arm_pub.publish(_trajectory(result.arm_joint_names, result.arm_positions, result.time_from_start_s))
            self.gripper_pub.publish(_trajectory(result.finger_joint_names, result.finger_positions,
                                                 result.time_from_start_s))
            self._commands += 1
            self._log_reason(None)
        else:
            self._log_reason(result.reason)
        self._publish_status()

    def _publish_chunk(self, chunk) -> None:
        msg = ActionChunk(image=rgb_to_image(chunk.image, "rgb8"), state=[float(v) for v in chunk.state],
                          instruction=chunk.instruction, chunk_size=len(chunk.actions), action_dim=7,
                          actions=[float(v) for v in chunk.actions.reshape(-1)], sampled=chunk.sampled,
                          log_prob=chunk.log_prob, checkpoint=chunk.checkpoint)
        if self._image_header is not None:
            msg.header = self._image_header
            msg.image.header = self._image_header
        self.chunk_pub.publish(msg)

    def _report_rates(self) -> None:
        if self._window_start is None:
            return
        now = self._now()
        elapsed = now - self._window_start
        if elapsed <= 0:  # the first tick came at this instant, or sim time went back: a new window
            self._ticks = self._commands = 0
            self._window_start = now
            return
        tick_hz, command_hz = self._ticks / elapsed, self._commands / elapsed
        s = self.controller.stats
        self.get_logger().debug(
            f"achieved rates: ticks {tick_hz:.1f} Hz, commands {command_hz:.1f} Hz; inference "
            f"{s.inference_ms_mean if s.inference_ms_mean is not None else float('nan'):.1f} ms per chunk (mean)")
        rate = self.controller.config.control_rate_hz
        if self._commands and tick_hz < 0.9 * rate:
            self.get_logger().warning(
                f"control loop cannot keep up: {tick_hz:.1f} Hz of {rate:g} Hz over the last {elapsed:.0f} s "
                f"(inference {s.inference_ms_mean or 0.0:.0f} ms per chunk); lower control_rate_hz or use a "
                "faster device", throttle_duration_sec=30.0)
        self._ticks = self._commands = 0
        self._window_start = now

    def stop(self) -> None:
        """Stop commanding for good: nothing more is published but a last status."""
        self.controller.set_enabled(False, self._now())
        self._publish_status(force=True, reason="shut down")
        # The node is destroyed right after this: without the acknowledgements a loaded machine
        # can drop the last status (a CI run saw the one before it as the final word).
        self.status_pub.wait_for_all_acked(RclpyDuration(seconds=1.0))


def _shutdown(node: "PolicyNode") -> None:
    node.stop()
    node.get_logger().info("shut down: no further commands")


def main(args=None) -> int:
    # A tick (a chunk's inference) finishes on SIGINT/SIGTERM, and nothing is published after it.
    return spin_until_signal(PolicyNode, "policy_node", (ConfigError,), args, on_shutdown=_shutdown)


if __name__ == "__main__":
    sys.exit(main())
