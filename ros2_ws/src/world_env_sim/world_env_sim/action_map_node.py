"""action_map_node: publishes the action map (pose markers) of the arm's joint states.

Subscribes ``joint_states`` (sensor_msgs/JointState, sensor-data QoS; remap it to the
commanded joint states to see commands). Publishes ``action_map/image_raw`` (Image, rgb8,
stamped with the joint state's stamp) and ``action_map/camera_info`` (CameraInfo of the rig
camera) for rviz. Malformed joint states are logged (once per reason) and dropped.

Parameters:
    rig_file (str, required): rig YAML (camera model + robot base), see world_env_common.rig.
    joint_names (str[]): the 7 arm joint names, default panda_joint1..7.
    finger_joint_names (str[]): the 2 finger joint names; if a message lacks them the last
        known opening is kept (default: open), since grippers often publish separately.
    arm_map (bool): also draw the arm's kinematic chain (for a world model trained with
        ``arm_map``), default false.
    frame_id (str): frame_id of the published image, default the rig camera's name + ``_optical``
        (the optical frame, as the world simulator and the LIBERO stand-in name it).
"""

from __future__ import annotations

import sys

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState

from world_env_common.rig import Rig, RigError
from world_env_common.robot import DEFAULT_FINGER_JOINT_NAMES, DEFAULT_JOINT_NAMES
from world_env_common.ros import qos
from world_env_common.ros.inputs import clip
from world_env_common.ros.node_main import spin_until_signal
from world_env_common.ros.images import rgb_to_image
from world_env_common.ros.joints import JointStateError, joint_positions
from world_env_sim.action_mapper import ActionMapper


class ActionMapNode(Node):
    def __init__(self):
        super().__init__("action_map")
        rig_file = self.declare_parameter(
            "rig_file", "", ParameterDescriptor(description="rig YAML: camera model + robot base")).value
        joint_names = self.declare_parameter(
            "joint_names", list(DEFAULT_JOINT_NAMES), ParameterDescriptor(description="7 arm joint names")).value
        finger_names = self.declare_parameter(
            "finger_joint_names", list(DEFAULT_FINGER_JOINT_NAMES),
            ParameterDescriptor(description="2 finger joint names")).value
        arm = self.declare_parameter(
            "arm_map", False, ParameterDescriptor(description="draw the arm's kinematic chain too")).value
        if not rig_file:
            raise RigError("parameter rig_file is required (a rig YAML: camera model + robot base)")
        self.mapper = ActionMapper(Rig.load(rig_file), joint_names, finger_names, bool(arm))
        self.frame_id = self.declare_parameter(
            "frame_id", f"{self.mapper.rig.camera.name}_optical",
            ParameterDescriptor(description="image frame_id")).value
        self.finger_qpos = np.array([0.04, -0.04])  # open until a message says otherwise
        self._reported: set[str] = set()

        self.image_pub = self.create_publisher(Image,
                                               "action_map/image_raw", qos.SENSOR)
        self.info_pub = self.create_publisher(CameraInfo, "action_map/camera_info", qos.SENSOR)
        self.create_subscription(JointState, "joint_states", self.on_joint_state, qos.SENSOR)
        self.get_logger().info(f"rendering {self.mapper.rig.camera.width}x{self.mapper.rig.camera.height} "
                               f"action maps from joint_states with rig {rig_file}")

    def _drop(self, reason: str) -> None:
        if reason not in self._reported:
            self._reported.add(reason)
            self.get_logger().warning(f"dropping joint state: {clip(reason)} (reported once)")

    def on_joint_state(self, msg: JointState) -> None:
        try:
            q = joint_positions(msg, self.mapper.robot.joint_names)
        except JointStateError as err:
            self._drop(str(err))
            return
        try:
            self.finger_qpos = joint_positions(msg, self.mapper.robot.finger_joint_names)
        except JointStateError:
            pass  # fingers often come on another joint_states publisher; keep the last opening
        image = rgb_to_image(self.mapper.render(q, self.finger_qpos), "rgb8")
        image.header.stamp = msg.header.stamp
        image.header.frame_id = self.frame_id
        info = CameraInfo(header=image.header, **self.mapper.rig.camera.camera_info_fields())
        self.image_pub.publish(image)
        self.info_pub.publish(info)


def main(args=None) -> int:
    return spin_until_signal(ActionMapNode, "action_map_node", (RigError,), args)


if __name__ == "__main__":
    sys.exit(main())
