"""world_env_interfaces: the generated types and a real cross-process round trip over DDS.

Assumes the workspace is built (scripts/build_ws.sh) and scripts/env.sh is sourced: env.sh
sources ros2_ws/install/local_setup.bash, which puts the generated Python package on
PYTHONPATH and its type-support libraries on LD_LIBRARY_PATH (the RMW dlopens them by name
when a publisher or subscription is created, so PYTHONPATH alone is not enough).

The round trip runs a subscriber and a publisher as two separate Python processes on a
ROS_DOMAIN_ID derived from this process's pid, discovery limited to localhost, logs in a
temp dir; both are killed in all cases, and the whole exchange is bounded by ~20 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from rosutil import kill, ros_env

try:
    from world_env_interfaces.msg import Reflection
    from world_env_interfaces.srv import ResetEpisode
except ImportError as exc:  # pragma: no cover - the message says what to do
    raise ImportError(
        "world_env_interfaces is not importable: run scripts/build_ws.sh, then "
        "`. scripts/env.sh` (it sources ros2_ws/install/local_setup.bash)"
    ) from exc

TOPIC = "/world_env_test/reflection"
ROUND_TRIP_TIMEOUT_S = 20.0

# The message the publisher sends; every value is exactly representable in its ROS type.
SENT = {
    "sec": 1_700_000_123,
    "nanosec": 456_789_000,
    "frame_id": "agentview_camera_optical_frame",
    "reward": 0.75,
    "done": True,
    "threshold": 0.5,
    "step": 42,
    "episode_id": "ep-test-0001",
}

SUBSCRIBER = r"""
import json, sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from world_env_interfaces.msg import Reflection

deadline = time.monotonic() + float(sys.argv[1])
rclpy.init()
node = rclpy.create_node("test_reflection_sub")
got = []
node.create_subscription(Reflection, sys.argv[2], got.append,
                         QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
print("READY", flush=True)
while not got and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
if not got:
    print("TIMEOUT", flush=True)
    sys.exit(3)
m = got[0]
print("MSG " + json.dumps({
    "sec": m.header.stamp.sec, "nanosec": m.header.stamp.nanosec,
    "frame_id": m.header.frame_id, "reward": m.reward, "done": m.done,
    "threshold": m.threshold, "step": m.step, "episode_id": m.episode_id,
}), flush=True)
node.destroy_node()
rclpy.shutdown()
"""

# Waits until the subscriber is matched (messages published before discovery completes are
# lost), then publishes the same message every 0.1 s until the subscriber has gone away
# (it exits after the first message) or the deadline passes: a reliable, volatile
# subscription may miss a sample sent in the instant before it has matched the writer.
PUBLISHER = r"""
import json, sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from world_env_interfaces.msg import Reflection

deadline = time.monotonic() + float(sys.argv[1])
v = json.loads(sys.argv[3])
rclpy.init()
node = rclpy.create_node("test_reflection_pub")
pub = node.create_publisher(Reflection, sys.argv[2],
                            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
while pub.get_subscription_count() == 0:
    if time.monotonic() > deadline:
        print("NO_SUBSCRIBER", flush=True)
        sys.exit(4)
    rclpy.spin_once(node, timeout_sec=0.05)
msg = Reflection()
msg.header.stamp.sec = v["sec"]
msg.header.stamp.nanosec = v["nanosec"]
msg.header.frame_id = v["frame_id"]
msg.reward = v["reward"]
msg.done = v["done"]
msg.threshold = v["threshold"]
msg.step = v["step"]
msg.episode_id = v["episode_id"]
sent = 0
while pub.get_subscription_count() > 0 and time.monotonic() < deadline:
    pub.publish(msg)
    sent += 1
    rclpy.spin_once(node, timeout_sec=0.1)
print("SENT %d" % sent, flush=True)
node.destroy_node()
rclpy.shutdown()
"""


def test_reflection_fields_and_types():
    assert Reflection.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "reward": "float",
        "done": "boolean",
        "threshold": "float",
        "step": "uint32",
        "episode_id": "string",
    }
    m = Reflection()
    assert (m.reward, m.done, m.threshold, m.step, m.episode_id) == (0.0, False, 0.0, 0, "")
    assert type(m.header).__module__.startswith("std_msgs.msg")
    m.reward = 0.25
    m.step = 2**32 - 1  # uint32 upper bound
    assert (m.reward, m.step) == (0.25, 2**32 - 1)
    # (Setter range/type assertions only run with ROS_PYTHON_CHECK_FIELDS=1 in Kilted.)


def test_action_chunk_fields_and_types():
    from world_env_interfaces.msg import ActionChunk

    assert ActionChunk.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "image": "sensor_msgs/Image", "state": "sequence<float>",
        "instruction": "string", "chunk_size": "uint32", "action_dim": "uint32", "actions": "sequence<float>",
        "sampled": "boolean", "log_prob": "float", "checkpoint": "string"}
    m = ActionChunk(chunk_size=2, action_dim=7, actions=[0.5] * 14, log_prob=float("nan"))
    assert len(m.actions) == 14 and m.log_prob != m.log_prob  # NaN survives: "no distribution"


def test_reset_episode_fields_and_types():
    assert ResetEpisode.Request.get_fields_and_field_types() == {
        "instruction": "string",
        "frame": "sensor_msgs/Image",
        "joint_state": "sensor_msgs/JointState",
        "episode_id": "string",
    }
    assert ResetEpisode.Response.get_fields_and_field_types() == {
        "success": "boolean",
        "message": "string",
        "episode_id": "string",
        "stamp": "builtin_interfaces/Time",
    }
    from sensor_msgs.msg import Image, JointState

    req = ResetEpisode.Request(instruction="put the bowl on the plate")
    assert isinstance(req.frame, Image) and isinstance(req.joint_state, JointState)
    assert req.episode_id == ""


@pytest.mark.ros
def test_reflection_cross_process_pub_sub(tmp_path):
    env = ros_env(tmp_path)
    budget = ROUND_TRIP_TIMEOUT_S - 2.0
    procs = []
    try:
        sub = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, str(budget), TOPIC],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs.append(sub)
        pub = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(budget), TOPIC, json.dumps(SENT)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs.append(pub)
        t0 = time.monotonic()
        sub_out, sub_err = sub.communicate(timeout=ROUND_TRIP_TIMEOUT_S)
        remaining = max(1.0, ROUND_TRIP_TIMEOUT_S - (time.monotonic() - t0))
        pub_out, pub_err = pub.communicate(timeout=remaining)
    finally:
        for p in procs:
            kill(p)

    diag = (f"subscriber rc={sub.returncode}\n{sub_out}\n{sub_err[-3000:]}\n"
            f"publisher rc={pub.returncode}\n{pub_out}\n{pub_err[-3000:]}")
    assert sub.returncode == 0, diag
    assert pub.returncode == 0, diag
    lines = [ln for ln in sub_out.splitlines() if ln.startswith("MSG ")]
    assert lines, diag
    received = json.loads(lines[0][4:])
    assert received == SENT, diag
