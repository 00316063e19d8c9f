"""Recording a run to a rosbag2 MCAP file with ``rosbags`` (no rosbag2 install needed), ROS-free.

``BagRecorder`` writes serialized (CDR) messages as a ``bag_recorder_node`` receives them;
``typestore()`` knows the standard ROS 2 types and world-env's own (read from the
world_env_interfaces .msg files), so ``rosbags`` and ``ros2 bag`` can read the bags back.
"""

from __future__ import annotations

from pathlib import Path

#: Topics recorded by default (relative names) and their types: what a real or stand-in robot
#: run needs to become a training dataset (``world-env bag-to-dataset``), plus the reflector's verdicts.
DEFAULT_TOPICS = {
    "camera/image_raw": "sensor_msgs/msg/Image",
    "camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "joint_states": "sensor_msgs/msg/JointState",
    "arm_controller/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
    "gripper_controller/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
    "task/instruction": "std_msgs/msg/String",
    "task/success": "std_msgs/msg/Bool",
    "reflection": "world_env_interfaces/msg/Reflection",
}


def _interfaces_msg_dir() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("world_env_interfaces")) / "msg"
    except Exception:  # noqa: BLE001 - not installed: the source tree
        return Path(__file__).resolve().parents[2] / "world_env_interfaces" / "msg"


def typestore():
    """A rosbags typestore with ROS 2 Kilted's types and world_env_interfaces' messages."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(_interfaces_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"world_env_interfaces/msg/{path.stem}"))
    store.register(types)
    return store


class BagRecorder:
    """Append serialized messages to a new rosbag2 (MCAP storage) at ``path``.

    ``add_topic(name, msgtype)`` once per topic, then ``write(name, data, time_ns)``; ``close()``
    finishes the file (a bag that was not closed lacks its index and metadata).
    """

    def __init__(self, path: str | Path):
        from rosbags.rosbag2 import StoragePlugin, Writer

        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists; give a new bag path")
        self.path = path
        self.store = typestore()
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str) -> None:
        if msgtype not in self.store.types:
            raise ValueError(f"{topic}: unknown message type {msgtype}")
        self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store)
        self.counts[topic] = 0

    def write(self, topic: str, data: bytes, time_ns: int) -> None:
        self.writer.write(self.connections[topic], int(time_ns), bytes(data))
        self.counts[topic] += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
