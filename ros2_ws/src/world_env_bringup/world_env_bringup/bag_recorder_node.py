"""bag_recorder_node: records topics to a rosbag2 MCAP file (``rosbags``; no rosbag2 needed).

Parameters: ``output`` (required: a new bag folder), ``topics`` (names, default
``recording.DEFAULT_TOPICS``; relative names follow the node's namespace and remaps) and
``types`` (their message types, same order; default the types of the default topics).
Camera images and joint states are taken with sensor-data QoS (they reach it from reliable and
best-effort publishers alike), the instruction as latched, everything else reliable.
Messages are stored serialized as received, stamped with the node clock's receive time. The
bag is closed on SIGINT/SIGTERM; the counts per topic are logged.
"""

from __future__ import annotations

import importlib
import sys

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from world_env_bringup.recording import DEFAULT_TOPICS, BagRecorder
from world_env_common.ros import qos
from world_env_common.ros.node_main import spin_until_signal

LATCHED_TOPICS = ("task/instruction", "instruction")
SENSOR_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/JointState")


class ConfigError(ValueError):
    """A parameter value the node cannot start with."""


def _message_class(msgtype: str):
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class BagRecorderNode(Node):
    def __init__(self):
        super().__init__("bag_recorder")
        output = self.declare_parameter("output", "", ParameterDescriptor(description="new bag folder")).value
        topics = self.declare_parameter("topics", list(DEFAULT_TOPICS)).value
        types = self.declare_parameter("types", [""]).value
        if not output:
            raise ConfigError("parameter output is required (a new bag folder)")
        if types == [""]:
            missing = [t for t in topics if t not in DEFAULT_TOPICS]
            if missing:
                raise ConfigError(f"give the types parameter for topics {missing}")
            types = [DEFAULT_TOPICS[t] for t in topics]
        if len(types) != len(topics):
            raise ConfigError(f"{len(topics)} topics but {len(types)} types")
        try:
            self.recorder = BagRecorder(output)
        except (FileExistsError, ValueError) as err:
            raise ConfigError(str(err)) from err
        self.resolved: dict[str, str] = {}
        for topic, msgtype in zip(topics, types):
            try:
                cls = _message_class(msgtype)
                if msgtype not in self.recorder.store.types:
                    raise ValueError("not in the typestore")
            except (ImportError, AttributeError, ValueError) as err:
                self.recorder.close()
                raise ConfigError(f"{topic}: cannot record type {msgtype}: {err}") from err
            profile = (qos.LATCHED if topic in LATCHED_TOPICS else qos.SENSOR if msgtype in SENSOR_TYPES
                       else qos.COMMAND)
            # The bag names topics fully resolved (namespace and remaps applied), as ros2 bag does.
            sub = self.create_subscription(cls, topic, lambda data, t=topic: self._on_message(t, data), profile,
                                           raw=True)
            self.resolved[topic] = sub.topic_name
            self.recorder.add_topic(sub.topic_name, msgtype)
        self.get_logger().info(f"recording {len(topics)} topics to {output} (MCAP)")

    def _on_message(self, topic: str, data: bytes) -> None:
        self.recorder.write(self.resolved[topic], data, self.get_clock().now().nanoseconds)

    def close(self) -> None:
        self.recorder.close()
        counts = ", ".join(f"{t} {n}" for t, n in self.recorder.counts.items())
        self.get_logger().info(f"bag {self.recorder.path} closed: {counts}")


def main(args=None) -> int:
    return spin_until_signal(BagRecorderNode, "bag_recorder_node", (ConfigError,), args,
                             on_shutdown=lambda node: node.close())


if __name__ == "__main__":
    sys.exit(main())
