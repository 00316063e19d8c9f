"""world_simulator_node: the world model standing in for the camera and the arm (imagined mode).

It consumes exactly what an arm driver consumes and publishes exactly what camera and arm
drivers publish, so the policy and reflector nodes run unchanged against it. The science is in
``world_env_sim.simulator.WorldSimulator``; this node converts messages and keeps (sim) time.

Episodes start from ``~/reset`` (world_env_interfaces/ResetEpisode): a real first frame (rgb8
or bgr8, any size), the arm's JointState and the instruction. A request with an empty frame
starts from the next episode of ``start_dataset`` (a world-env dataset folder) instead: its first
frame, joint positions and instruction. Until the first reset nothing is published.

Each control step (``control_rate_hz`` of simulated time; the wall-clock pace is whatever the
world model's prediction takes) the node samples the commanded trajectories at the current sim
time, predicts the next frame, advances sim time by one period and publishes:

- ``camera/image_raw`` (Image, ``encoding``, sensor-data QoS) and ``camera/camera_info``
  (CameraInfo of the rig camera at the model's resolution), as a camera driver;
- ``joint_states`` (JointState: 7 arm + 2 finger joints), as the arm's joint_state_broadcaster;
- ``/clock`` (rosgraph_msgs/Clock) when ``publish_clock`` is true: run the other nodes with
  ``use_sim_time:=true`` and they live at the simulator's pace;
- inspection topics for rviz (reliable): ``~/predicted/image_raw`` (the predicted frame, rgb8),
  ``~/action_map/image_raw`` (the action map of the commanded state it was predicted from),
  ``~/eef_pose`` (PoseStamped of the end effector in ``world_frame``) and ``task/instruction``
  (String, latched);
- ``~/status`` (String, JSON, latched): episode id, steps, mean prediction time.

Subscribes (reliable) ``arm_controller/joint_trajectory`` and
``gripper_controller/joint_trajectory`` (JointTrajectory, joint_trajectory_controller semantics).
Malformed trajectories are logged once per reason and dropped. Configuration errors stop the node
at start with exit code 2 and a message.

Parameters:
    world_model (str, required): world-model checkpoint (train-world-model run or model folder).
    rig_file (str): rig YAML (camera model + robot base), see world_env_common.rig; required
        unless start_dataset is given (then its first episode's camera, and the base pose its
        recorded joints and states imply).
    start_dataset (str): dataset whose episodes empty-frame resets start from (default none).
    autostart (bool): start the first episode from start_dataset at once, default false.
    control_rate_hz (float): simulated control steps per second, default 20 (LIBERO's).
    sampler_steps (int): denoising steps per frame (0: the model's own), default 0.
    precision (str): auto (default: bf16 where the device has bf16 instructions, else fp32),
        bf16 (autocast, AMX on CPU, frames within a grey level or so of fp32, README "World
        simulator"; emulated and far slower on a CPU without them) or fp32.
    publish_clock (bool): publish /clock, default true.
    encoding (str): camera image encoding, bgr8 (default) or rgb8.
    frame_id (str): camera frame_id, default the rig camera's name + ``_optical`` (REP 103's
        optical frame convention, as the LIBERO stand-in's ``agentview_optical``).
    joint_names, finger_joint_names (str[]): default panda_joint1..7, panda_finger_joint1..2.
    device (str): torch device, default cpu. seed (int): sampling-noise seed, default 0.
    world_frame (str): frame_id of ~/eef_pose, default world.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from geometry_msgs.msg import PoseStamped
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from world_env_common.pose import axis_angle_to_quat
from world_env_common.rig import Rig, RigError
from world_env_common.robot import DEFAULT_FINGER_JOINT_NAMES, DEFAULT_JOINT_NAMES, PandaModel
from world_env_common.ros import qos
from world_env_common.ros.images import ImageError, image_to_rgb, rgb_to_image
from world_env_common.ros.inputs import clip, instruction_problem
from world_env_common.ros.joints import JointStateError, joint_positions
from world_env_common.ros.node_main import spin_until_signal
from world_env_common.ros.trajectories import follow_trajectory
from world_env_interfaces.srv import ResetEpisode
from world_env_sim.simulator import WorldSimulator

ENCODINGS = ("bgr8", "rgb8")


class ConfigError(ValueError):
    """A parameter value the node cannot start with."""


class WorldSimulatorNode(Node):
    def __init__(self):
        super().__init__("world_simulator")

        def declare(name, default, description, number=False):
            descriptor = ParameterDescriptor(description=description, read_only=True, dynamic_typing=number)
            try:
                value = self.declare_parameter(name, default, descriptor).value
            except InvalidParameterTypeException as err:
                raise ConfigError(f"parameter {name}: {err}") from err
            if number and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"parameter {name} must be a number, got {value!r}")
            return value

        checkpoint = declare("world_model", "", "world-model checkpoint folder (required)")
        rig_file = declare("rig_file", "", "rig YAML: camera model + robot base (required)")
        start_dataset = declare("start_dataset", "", "dataset that empty-frame resets start from")
        rate = declare("control_rate_hz", 20.0, "simulated control steps per second", number=True)
        sampler_steps = declare("sampler_steps", 0, "denoising steps per frame (0: the model's own)")
        precision = declare("precision", "auto", "world-model arithmetic: auto (bf16 where native), bf16 or fp32")
        self.publish_clock = declare("publish_clock", True, "publish /clock (sim time)")
        autostart = declare("autostart", False, "start the first episode from start_dataset at once")
        self.encoding = declare("encoding", "bgr8", "camera image encoding: bgr8 or rgb8")
        joint_names = declare("joint_names", list(DEFAULT_JOINT_NAMES), "the 7 arm joint names")
        finger_names = declare("finger_joint_names", list(DEFAULT_FINGER_JOINT_NAMES), "the 2 finger joint names")
        device = declare("device", "cpu", "torch device")
        self.world_frame = declare("world_frame", "world", "frame_id of ~/eef_pose (the rig's world frame)")
        seed = declare("seed", 0, "seed of the sampling noise")
        if not checkpoint:
            raise ConfigError("parameter world_model is required (a train-world-model run or model folder)")
        if not rig_file and not start_dataset:
            raise ConfigError("parameter rig_file is required (a rig YAML: camera model + robot base) "
                              "unless start_dataset gives them")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"encoding must be one of {', '.join(ENCODINGS)}, got '{self.encoding}'")
        if not rate > 0:
            raise ConfigError(f"control_rate_hz must be > 0, got {rate}")
        if sampler_steps < 0:
            raise ConfigError(f"sampler_steps must be >= 0, got {sampler_steps}")
        if precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision must be auto, bf16 or fp32, got '{precision}'")
        self.period = 1.0 / float(rate)

        self.dataset = None
        if start_dataset:
            from world_env_training.data.dataset import Dataset, DatasetError

            try:
                self.dataset = Dataset(start_dataset)
            except (FileNotFoundError, ValueError, DatasetError) as err:
                raise ConfigError(f"start_dataset {start_dataset}: {err}") from err
            if len(self.dataset) == 0:
                raise ConfigError(f"start_dataset {start_dataset}: no episodes")
        if rig_file:
            rig = Rig.load(rig_file)
        else:  # the recorded episode's camera, and the base pose its joints and states imply
            from world_env_common.camera import CameraModel

            first = self.dataset[0]
            if not first.camera:
                raise ConfigError(f"start_dataset {start_dataset}: no camera model in its episodes; give rig_file")
            rig = Rig.from_trajectory(CameraModel.from_dict(first.camera), first.states, first.joint_positions)
            self.get_logger().info(f"rig from {start_dataset}: camera '{rig.camera.name}', robot base at "
                                   f"{np.round(rig.base_position, 4).tolist()}")
        self.frame_id = declare("frame_id", f"{rig.camera.name}_optical", "camera frame_id (optical frame)")
        robot = PandaModel()
        robot.set_base_pose(rig.base_position, rig.base_quat_wxyz)
        try:  # torch and the model load only now
            from world_env_training.models.world_model import WorldModel

            model = WorldModel.from_pretrained(checkpoint, device)
            self.sim = WorldSimulator(model, rig.camera, robot, joint_names, finger_names, device,
                                      sampler_steps or None, seed, precision)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"world_model {checkpoint}: {err}") from err
        self._next_start = 0
        self.names = self.sim.joint_names + self.sim.finger_joint_names
        self.camera_info = self.sim.camera.camera_info_fields()
        self._reported: set[str] = set()
        self.sim_time_ns = 0
        self.episode_id = ""
        self._predict_s = 0.0

        self.image_pub = self.create_publisher(Image, "camera/image_raw", qos.SENSOR)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", qos.SENSOR)
        self.joint_pub = self.create_publisher(JointState, "joint_states", qos.SENSOR)
        self.clock_pub = self.create_publisher(ClockMsg, "/clock", qos.SENSOR) if self.publish_clock else None
        self.predicted_pub = self.create_publisher(Image, "~/predicted/image_raw", qos.COMMAND)
        self.action_map_pub = self.create_publisher(Image, "~/action_map/image_raw", qos.COMMAND)
        self.eef_pub = self.create_publisher(PoseStamped, "~/eef_pose", qos.COMMAND)
        self.instruction_pub = self.create_publisher(String, "task/instruction", qos.LATCHED)
        self.status_pub = self.create_publisher(String, "~/status", qos.LATCHED)
        self.create_subscription(JointTrajectory, "arm_controller/joint_trajectory",
                                 lambda msg: self._on_trajectory(msg, "arm"), qos.COMMAND)
        self.create_subscription(JointTrajectory, "gripper_controller/joint_trajectory",
                                 lambda msg: self._on_trajectory(msg, "gripper"), qos.COMMAND)
        self.create_service(ResetEpisode, "~/reset", self._on_reset)
        # The simulator is the clock source: its own loop runs on the steady wall clock.
        self.create_timer(self.period, self._on_step, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._publish_status()
        self.get_logger().info(
            f"world simulator ready: {model.config.resolution}x{model.config.resolution} frames from {checkpoint}, "
            f"control at {1 / self.period:g} Hz sim time" + ("" if autostart else "; waiting for ~/reset"))
        if autostart:
            if self.dataset is None:
                raise ConfigError("autostart needs start_dataset")
            self._on_reset(ResetEpisode.Request(), ResetEpisode.Response())

    # ------------------------------------------------------------------ time
    def _sim_now(self) -> float:
        return self.sim_time_ns * 1e-9

    def _time_msg(self):
        from builtin_interfaces.msg import Time

        return Time(sec=self.sim_time_ns // 1_000_000_000, nanosec=self.sim_time_ns % 1_000_000_000)

    # ------------------------------------------------------------------ episodes
    def _note_once(self, text: str) -> None:
        if text not in self._reported:
            self._reported.add(text)
            self.get_logger().warning(f"{clip(text)} (reported once)")

    def _start_from_request(self, request) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        if request.frame.height == 0 and request.frame.width == 0:
            if self.dataset is None:
                raise ValueError("empty frame and no start_dataset parameter to take one from")
            i = self._next_start % len(self.dataset)
            self._next_start += 1
            episode = self.dataset[i]
            width = float(episode.states[0, 6])
            instruction = request.instruction.strip() or episode.instruction
            return episode.frames[0], episode.joint_positions[0], np.array([0.5 * width, -0.5 * width]), instruction
        frame = image_to_rgb(request.frame)
        arm = joint_positions(request.joint_state, self.sim.joint_names)
        fingers = joint_positions(request.joint_state, self.sim.finger_joint_names)
        return frame, arm, fingers, request.instruction

    def _on_reset(self, request, response):
        try:
            frame, arm, fingers, instruction = self._start_from_request(request)
            problem = instruction_problem(instruction)
            if problem:
                raise ValueError(problem)
            self.sim.reset(frame, arm, fingers, instruction)
        except (ImageError, JointStateError, ValueError) as err:
            response.success, response.message = False, f"reset refused: {err}"
            self.get_logger().warning(clip(response.message, 300))
            return response
        self.episode_id = request.episode_id or uuid.uuid4().hex[:12]
        self._predict_s = 0.0
        # One period passes at a reset, so that o_0's stamp is later than anything of the episode
        # before: "stamped at or after the reset stamp" identifies the new episode's messages.
        self.sim_time_ns += int(round(self.period * 1e9))
        self.instruction_pub.publish(String(data=instruction))
        self._publish(self.sim.frame, None)  # o_0, as a camera would show it
        self._publish_status()
        response.success, response.message, response.episode_id = True, instruction, self.episode_id
        response.stamp = self._time_msg()
        self.get_logger().info(f"episode {clip(self.episode_id)}: '{instruction}'")
        return response

    # ------------------------------------------------------------------ commands
    def _on_trajectory(self, msg: JointTrajectory, controller: str) -> None:
        setter = self.sim.set_arm_trajectory if controller == "arm" else self.sim.set_gripper_trajectory
        follow_trajectory(msg, controller, setter, self._sim_now(), self._note_once)

    # ------------------------------------------------------------------ loop
    def _on_step(self) -> None:
        if not self.sim.started:
            return
        t0 = time.perf_counter()
        out = self.sim.step(self._sim_now() + self.period)
        self._predict_s += time.perf_counter() - t0
        self.sim_time_ns += int(round(self.period * 1e9))
        self._publish(out["frame"], out["action_map"])
        if self.sim.steps % 20 == 0:
            self._publish_status()

    def _publish(self, frame: np.ndarray, action_map: np.ndarray | None) -> None:
        stamp = self._time_msg()
        if self.clock_pub is not None:
            self.clock_pub.publish(ClockMsg(clock=stamp))
        joints = JointState(name=self.names)
        joints.header.stamp = stamp
        joints.position = [*self.sim.q.tolist(), *self.sim.finger_positions.tolist()]
        self.joint_pub.publish(joints)
        image = rgb_to_image(frame, self.encoding)
        image.header.stamp, image.header.frame_id = stamp, self.frame_id
        self.image_pub.publish(image)
        self.info_pub.publish(CameraInfo(header=image.header, **self.camera_info))
        predicted = rgb_to_image(frame, "rgb8")
        predicted.header = image.header
        self.predicted_pub.publish(predicted)
        state = self.sim.env.states[0]
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, self.world_frame
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in state[:3])
        qx, qy, qz, qw = (float(v) for v in axis_angle_to_quat(state[3:6]))
        orientation = pose.pose.orientation
        orientation.x, orientation.y, orientation.z, orientation.w = qx, qy, qz, qw
        self.eef_pub.publish(pose)
        if action_map is not None:
            amap = rgb_to_image(action_map, "rgb8")
            amap.header = image.header
            self.action_map_pub.publish(amap)

    def _publish_status(self) -> None:
        steps = self.sim.steps
        self.status_pub.publish(String(data=json.dumps({
            "episode_id": self.episode_id, "steps": steps, "sim_time_s": self._sim_now(),
            "predict_ms_mean": 1e3 * self._predict_s / steps if steps else None})))


def main(args=None) -> int:
    # A prediction in progress is finished on SIGINT/SIGTERM.
    return spin_until_signal(WorldSimulatorNode, "world_simulator_node", (ConfigError, RigError), args)


if __name__ == "__main__":
    sys.exit(main())
