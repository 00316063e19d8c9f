"""A second node process for the action-map test: sends joint states, records the images.

Usage: action_map_probe.py OUT_DIR JOINTS_JSON TIMEOUT_S
Sends two malformed joint states (a NaN, a missing joint) and then the valid one from
JOINTS_JSON (names, positions, stamp) repeatedly until an image with that stamp arrives;
writes image.npy, info.json and result.json to OUT_DIR.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from sensor_msgs.msg import CameraInfo, Image, JointState

from world_env_common.ros import qos
from world_env_common.ros.images import image_to_rgb

out_dir, spec, timeout = Path(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
rclpy.init()
node = rclpy.create_node("action_map_probe")
images, infos = [], []
node.create_subscription(Image, "action_map/image_raw", images.append, qos.SENSOR)
node.create_subscription(CameraInfo, "action_map/camera_info", infos.append, qos.SENSOR)
pub = node.create_publisher(JointState, "joint_states", qos.SENSOR)


def joint_state(names, positions, sec):
    msg = JointState(name=list(names), position=[float(p) for p in positions])
    msg.header.stamp.sec = sec
    return msg


while pub.get_subscription_count() == 0 or node.count_publishers("action_map/image_raw") == 0:
    if time.monotonic() > deadline:
        sys.exit("probe: action_map_node never appeared")
    rclpy.spin_once(node, timeout_sec=0.05)
time.sleep(0.5)  # let the node's subscriptions match ours before the first sample

names, positions = spec["names"], spec["positions"]
nan = list(positions)
nan[2] = float("nan")
pub.publish(joint_state(names, nan, 1))
pub.publish(joint_state(names[1:], positions[1:], 2))
wanted = spec["sec"]
got = None
while got is None and time.monotonic() < deadline:
    pub.publish(joint_state(names, positions, wanted))
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.02)
    got = next((m for m in images if m.header.stamp.sec == wanted), None)
if got is None:
    sys.exit("probe: no action map with the valid joint state's stamp")
info = next(m for m in infos if m.header.stamp.sec == wanted)
np.save(out_dir / "image.npy", image_to_rgb(got))
(out_dir / "info.json").write_text(json.dumps({"k": list(info.k), "width": info.width, "height": info.height,
                                               "frame_id": got.header.frame_id, "encoding": got.encoding}))
stamps = sorted({m.header.stamp.sec for m in images})
(out_dir / "result.json").write_text(json.dumps({"stamps": stamps}))
node.destroy_node()
rclpy.shutdown()
