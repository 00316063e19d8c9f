"""libero_robot_node: the LIBERO simulator on the wire as the real robot's drivers would be.

A hardware stand-in for testing real mode without hardware: a camera driver, the arm's and
gripper's ros2_control joint_trajectory_controllers and ``/joint_states``, over one LIBERO task
(``world_env_libero.standin`` does the work; this node converts messages and keeps time).

Publishes (sensor-data QoS unless said): ``camera/image_raw`` (Image, bgr8 or rgb8, upright
agent view, at ``camera_rate_hz``) and ``camera/camera_info`` (CameraInfo, same header);
``joint_states`` (JointState: 7 arm + 2 finger joints, positions and velocities, every control
step); ``task/success`` (Bool, reliable, every control step); ``task/instruction`` (String,
latched). Subscribes (reliable): ``arm_controller/joint_trajectory`` and
``gripper_controller/joint_trajectory`` (JointTrajectory). Service ``~/reset`` (Trigger).
Malformed trajectories are logged once per reason and dropped. Configuration errors stop the
node at start with exit code 2 and a message.
"""

from __future__ import annotations

import sys
import time

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from world_env_common.robot import DEFAULT_FINGER_JOINT_NAMES, DEFAULT_JOINT_NAMES
from world_env_common.ros import qos
from world_env_common.ros.inputs import clip
from world_env_common.ros.node_main import spin_until_signal
from world_env_common.ros.trajectories import follow_trajectory
from world_env_common.ros.images import rgb_to_image
from world_env_libero.env import LiberoEnv
from world_env_libero.standin import StandIn, camera_rate_budget

ENCODINGS = ("bgr8", "rgb8")
#: Seconds between the debug lines with the achieved rates (and the warnings if too slow).
RATE_REPORT_PERIOD_S = 5.0
#: Weight of the newest duration in the running means of step and render times.
EMA_WEIGHT = 0.2


class ConfigError(ValueError):
    """A parameter value the node cannot start with."""


class LiberoRobotNode(Node):
    def __init__(self):
        super().__init__("libero_robot")

        def declare(name, default, description, read_only=True, number=False):
            # number: an int or a float (20 or 20.0), so dynamically typed and checked here.
            descriptor = ParameterDescriptor(description=description, read_only=read_only, dynamic_typing=number)
            try:
                value = self.declare_parameter(name, default, descriptor).value
            except InvalidParameterTypeException as err:
                raise ConfigError(f"parameter {name}: {err}") from err
            if number and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"parameter {name} must be a number, got {value!r}")
            return value

        suite = declare("suite", "libero_object", "LIBERO suite: libero_spatial, libero_object, libero_goal, libero_10")
        task_id = declare("task_id", 0, "task index in the suite (task order 0)")
        init_state_id = declare(
            "init_state_id", 0, "LIBERO init state of the next reset (startup and ~/reset); "
            "~/reset increments it modulo the number of init states", read_only=False)
        resolution = declare("resolution", 128, "camera image width and height (pixels)")
        control_rate = declare("control_rate_hz", 20.0, "control steps per second (LIBERO's control frequency is 20)",
                               number=True)
        camera_rate = declare("camera_rate_hz", 10.0, "camera frames per second (a render costs ~60 ms on CPU)",
                              number=True)
        self.frame_id = declare("frame_id", "agentview_optical", "frame_id of the camera image and camera info")
        joint_names = declare("joint_names", list(DEFAULT_JOINT_NAMES), "the 7 arm joint names")
        finger_names = declare("finger_joint_names", list(DEFAULT_FINGER_JOINT_NAMES), "the 2 finger joint names")
        self.encoding = declare("encoding", "bgr8", "camera image encoding: bgr8 or rgb8")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"encoding must be one of {', '.join(ENCODINGS)}, got '{self.encoding}'")
        for name, rate in (("control_rate_hz", control_rate), ("camera_rate_hz", camera_rate)):
            if not rate > 0:
                raise ConfigError(f"{name} must be > 0, got {rate}")
        if not 1 <= resolution <= 4096:
            raise ConfigError(f"resolution must be 1..4096 pixels, got {resolution}")
        self.control_rate, self.camera_rate = float(control_rate), float(camera_rate)

        try:  # LiberoEnv imports LIBERO and robosuite only now (heavy, they print on import)
            env = LiberoEnv(suite, task_id, resolution=resolution)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        try:
            self.standin = StandIn(env, joint_names, finger_names)
            if not 0 <= init_state_id < env.num_init_states:
                raise ConfigError(f"init_state_id {init_state_id} out of range "
                                  f"({env.num_init_states} init states for {suite} task {task_id})")
        except ValueError as err:
            env.close()
            raise ConfigError(str(err)) from err
        self.env = env
        self.add_on_set_parameters_callback(self._check_parameters)
        self.camera_info = env.camera.camera_info_fields()
        self.names = self.standin.joint_names + self.standin.finger_joint_names
        self._reported: set[str] = set()

        self.image_pub = self.create_publisher(Image, "camera/image_raw", qos.SENSOR)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", qos.SENSOR)
        self.joint_pub = self.create_publisher(JointState, "joint_states", qos.SENSOR)
        self.success_pub = self.create_publisher(Bool, "task/success", qos.COMMAND)
        self.instruction_pub = self.create_publisher(String, "task/instruction", qos.LATCHED)
        self.create_subscription(JointTrajectory, "arm_controller/joint_trajectory",
                                 lambda msg: self._on_trajectory(msg, "arm"), qos.COMMAND)
        self.create_subscription(JointTrajectory, "gripper_controller/joint_trajectory",
                                 lambda msg: self._on_trajectory(msg, "gripper"), qos.COMMAND)
        self.create_service(Trigger, "~/reset", self._on_reset)

        self._reset()
        self._steps = self._frames = 0
        self._step_s = self._render_s = 0.0
        self._window_start = time.monotonic()
        # Frames are taken right after a control step, camera_rate / control_rate of the steps
        # (credit-counted), so a ~60 ms render delays the next step without dropping it.
        # Control first: running means of step and render times decide how many frames fit.
        self._step_mean = self._render_mean = None
        self._frame_credit = 1.0
        self._loop_start, self._loop_steps = time.monotonic(), 0
        self.create_timer(1.0 / self.control_rate, self._on_control)
        self.create_timer(RATE_REPORT_PERIOD_S, self._report_rates)
        self.get_logger().info(
            f"LIBERO stand-in ready: {suite} task {task_id} ('{env.instruction}'), {resolution}x{resolution} "
            f"{self.encoding} camera at {camera_rate:g} Hz, control at {control_rate:g} Hz")

    # ------------------------------------------------------------------ parameters
    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "init_state_id":
                n = self.env.num_init_states
                if p.type_ != Parameter.Type.INTEGER or not 0 <= p.value < n:
                    return SetParametersResult(successful=False,
                                               reason=f"init_state_id must be an integer in 0..{n - 1}")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ episode
    def _reset(self) -> int:
        """Reset to init_state_id, then advance the parameter; returns the init state used."""
        state_id = self.get_parameter("init_state_id").value
        self.standin.reset(state_id)
        self.set_parameters([Parameter("init_state_id", value=(state_id + 1) % self.env.num_init_states)])
        self.instruction_pub.publish(String(data=self.env.instruction))
        return state_id

    def _on_reset(self, request, response):
        try:
            state_id = self._reset()
        except Exception as err:  # noqa: BLE001 - the caller gets the reason, the node lives on
            response.success, response.message = False, f"reset failed: {err}"
            self.get_logger().error(response.message)
            return response
        response.success, response.message = True, self.env.instruction
        self.get_logger().info(f"reset to init state {state_id}: '{self.env.instruction}'")
        return response

    # ------------------------------------------------------------------ commands
    def _note_once(self, text: str) -> None:
        if text not in self._reported:
            self._reported.add(text)
            self.get_logger().warning(f"{clip(text)} (reported once)")

    def _on_trajectory(self, msg: JointTrajectory, controller: str) -> None:
        setter = self.standin.set_arm_trajectory if controller == "arm" else self.standin.set_gripper_trajectory
        follow_trajectory(msg, controller, setter, self._now(), self._note_once)

    # ------------------------------------------------------------------ loops
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_control(self) -> None:
        # Steps the wall clock asks for since the loop started. A tick that a render pushed past
        # the next one (the timer then skips it) is made up with one extra step, so the
        # simulation keeps real time; a longer stall (a reset) is forgiven, not replayed.
        now = time.monotonic()
        owed = (now - self._loop_start) * self.control_rate - self._loop_steps
        if owed > 3.0:
            self._loop_start = now - (self._loop_steps + 1) / self.control_rate
            owed = 1.0
        for _ in range(2 if owed >= 2.0 else 1):
            stamp = self._control_step()
            self._frame_credit = min(1.0, self._frame_credit + self.allowed_camera_rate() / self.control_rate)
        if self._frame_credit >= 1.0 - 1e-9:
            self._frame_credit -= 1.0
            self._camera_frame(stamp)

    def _control_step(self):
        """One simulation step; publishes joint states and success. Returns their stamp."""
        t0 = time.monotonic()
        _, success = self.standin.step(self._now())
        self._loop_steps += 1
        stamp = self.get_clock().now().to_msg()
        msg = JointState(name=self.names)
        msg.header.stamp = stamp
        msg.position = [*self.standin.joint_positions.tolist(), *self.standin.finger_positions.tolist()]
        msg.velocity = [*self.standin.joint_velocities.tolist(), *self.standin.finger_velocities.tolist()]
        self.joint_pub.publish(msg)
        self.success_pub.publish(Bool(data=bool(success)))
        took = time.monotonic() - t0
        self._steps += 1
        self._step_s += took
        self._step_mean = took if self._step_mean is None else self._step_mean + EMA_WEIGHT * (took - self._step_mean)
        return stamp

    def _camera_frame(self, stamp) -> None:
        """Render and publish the state just reached, with the joint state's stamp."""
        t0 = time.monotonic()
        image = rgb_to_image(self.standin.render(), self.encoding)
        image.header.stamp, image.header.frame_id = stamp, self.frame_id
        self.image_pub.publish(image)
        self.info_pub.publish(CameraInfo(header=image.header, **self.camera_info))
        took = time.monotonic() - t0
        self._frames += 1
        self._render_s += took
        self._render_mean = (took if self._render_mean is None
                             else self._render_mean + EMA_WEIGHT * (took - self._render_mean))

    def allowed_camera_rate(self) -> float:
        """camera_rate_hz (at most one frame per control step), or less if the renders would not
        leave the control loop its time."""
        if self._step_mean is None or self._render_mean is None:
            return min(self.camera_rate, self.control_rate)
        return camera_rate_budget(self._step_mean, self._render_mean, self.control_rate,
                                  min(self.camera_rate, self.control_rate))

    def _report_rates(self) -> None:
        now = time.monotonic()
        elapsed = now - self._window_start
        control_hz, camera_hz = self._steps / elapsed, self._frames / elapsed
        step_ms = 1e3 * self._step_s / max(self._steps, 1)
        render_ms = 1e3 * self._render_s / max(self._frames, 1)
        self.get_logger().debug(f"achieved rates: control {control_hz:.1f} Hz (step {step_ms:.1f} ms), "
                                f"camera {camera_hz:.1f} Hz (render {render_ms:.1f} ms)")
        if control_hz < 0.9 * self.control_rate:
            self.get_logger().warning(
                f"control loop cannot keep up: {control_hz:.1f} Hz of {self.control_rate:g} Hz over the last "
                f"{elapsed:.0f} s (step {step_ms:.1f} ms, camera render {render_ms:.1f} ms at {camera_hz:.1f} Hz); "
                "lower control_rate_hz or camera_rate_hz", throttle_duration_sec=30.0)
        allowed = self.allowed_camera_rate()
        if allowed < 0.9 * self.camera_rate:
            self.get_logger().warning(
                f"camera throttled to {allowed:.1f} Hz of {self.camera_rate:g} Hz so that the control loop keeps "
                f"its rate (render {render_ms:.1f} ms, step {step_ms:.1f} ms)", throttle_duration_sec=30.0)
        self._steps = self._frames = 0
        self._step_s = self._render_s = 0.0
        self._window_start = now

    def destroy_node(self):
        # Idempotent: main calls it after spin, and the context's shutdown calls it again.
        standin, self.standin = getattr(self, "standin", None), None
        if standin is not None:
            standin.close()
        super().destroy_node()


def main(args=None) -> int:
    # A simulator step or render in progress is finished on SIGINT/SIGTERM.
    return spin_until_signal(LiberoRobotNode, "libero_robot_node", (ConfigError,), args)


if __name__ == "__main__":
    sys.exit(main())
