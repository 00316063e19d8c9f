"""A second node process for the reflector node's test: plays camera and task.

Usage: reflector_probe.py OUT_DIR TIMEOUT_S
Publishes the instruction (latched), then camera frames one at a time (each waits for its
Reflection, matched by header stamp): good frames in bgr8 and rgb8 at two sizes, bad frames
(unsupported encoding, data size and step mismatches, each sent 3 times) followed by a good
one, a ~/reset, a new instruction, and a run of frames for the round-trip latency. Writes
OUT_DIR/result.json (the test asserts). Exits non-zero with a message if the node never
appears or a frame's verdict never comes.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from world_env_common.ros import qos
from world_env_common.ros.images import rgb_to_image
from world_env_interfaces.msg import Reflection

INSTRUCTION = "put the bowl on the plate"
out_dir, timeout = Path(sys.argv[1]), float(sys.argv[2])
deadline = time.monotonic() + timeout
rclpy.init()
node = rclpy.create_node("reflector_probe")
received = {}  # (sec, nanosec) -> (monotonic receipt time, Reflection)
node.create_subscription(Reflection, "reflection",
                         lambda m: received.setdefault((m.header.stamp.sec, m.header.stamp.nanosec),
                                                       (time.monotonic(), m)), qos.COMMAND)
camera_pub = node.create_publisher(Image, "camera/image_raw", qos.SENSOR)
instruction_pub = node.create_publisher(String, "instruction", qos.LATCHED)
reset = node.create_client(Trigger, "/reflector/reset")
result = {}
rng = np.random.default_rng(0)
counter = [0]


def fail(text):
    (out_dir / "result.json").write_text(json.dumps(result))
    sys.exit(f"probe: {text}")


def spin_until(condition, what, limit=None):
    end = min(deadline, time.monotonic() + limit) if limit else deadline
    while not condition():
        if time.monotonic() > end:
            return False if limit else fail(f"timed out waiting for {what}")
        rclpy.spin_once(node, timeout_sec=0.01)
    return True


def frame(encoding="rgb8", height=48, width=64, bad=None):
    counter[0] += 1
    msg = rgb_to_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), encoding)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + counter[0], 123 * counter[0]
    msg.header.frame_id = f"cam_{encoding}_{width}x{height}"
    if bad == "encoding":
        msg.encoding = "32FC1"
    elif bad == "size":
        msg.data = bytes(msg.data)[:1000]
    elif bad == "step":
        msg.step = 100
    return msg


def key(msg):
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


def judge(what, tries=5, **kwargs):
    """Send good frames until one is judged (best effort may lose one); its record."""
    for _ in range(tries):
        msg = frame(**kwargs)
        sent = time.monotonic()
        camera_pub.publish(msg)
        if spin_until(lambda: key(msg) in received, what, 3.0):
            at, r = received[key(msg)]
            return {"sent_stamp": list(key(msg)), "sent_frame_id": msg.header.frame_id,
                    "stamp": [r.header.stamp.sec, r.header.stamp.nanosec], "frame_id": r.header.frame_id,
                    "reward": r.reward, "done": r.done, "threshold": r.threshold, "step": r.step,
                    "episode_id": r.episode_id, "round_trip_ms": (at - sent) * 1e3}
    fail(f"no Reflection for {what}")


def call(client, request, what):
    future = client.call_async(request)
    spin_until(future.done, what, 10)
    return future.result()


# --- Discovery.
spin_until(lambda: node.count_publishers("reflection") > 0 and camera_pub.get_subscription_count() > 0
           and instruction_pub.get_subscription_count() > 0 and reset.service_is_ready(), "reflector_node")
response = call(reset, Trigger.Request(), "~/reset before any instruction")
result["reset_without_instruction"] = {"success": response.success, "message": response.message}
camera_pub.publish(frame())  # before the instruction: dropped ("no instruction yet")
spin_until(lambda: False, "", 0.3)
instruction_pub.publish(String(data=INSTRUCTION))

# --- Good frames: bgr8 and rgb8, two sizes.
result["good"] = [judge("first frame", tries=20)]
for encoding, height, width in [("bgr8", 48, 64), ("rgb8", 72, 96), ("bgr8", 72, 96), ("rgb8", 48, 64)]:
    result["good"].append(judge(f"{encoding} {width}x{height}", encoding=encoding, height=height, width=width))

# --- Bad frames: no Reflection for any of them; the next good one is the next step.
bad_stamps = []
for bad in ("encoding", "size", "step"):
    for _ in range(3):
        msg = frame(bad=bad)
        bad_stamps.append(key(msg))
        camera_pub.publish(msg)
        spin_until(lambda: False, "", 0.1)
result["after_bad"] = judge("a good frame after the bad ones")
result["bad_answered"] = sum(k in received for k in bad_stamps)

# --- ~/reset: a new episode, step 0 again.
response = call(reset, Trigger.Request(), "~/reset")
result["reset"] = {"success": response.success, "message": response.message}
result["after_reset"] = [judge("first frame after reset"), judge("second frame after reset")]

# --- A new instruction: a new episode too.
instruction_pub.publish(String(data="open the drawer"))
spin_until(lambda: False, "", 0.5)
result["after_instruction"] = judge("first frame after a new instruction")

# --- Round trip: 20 frames one after another.
result["latency"] = [judge(f"latency frame {i}")["round_trip_ms"] for i in range(20)]
(out_dir / "result.json").write_text(json.dumps(result))
node.destroy_node()
rclpy.shutdown()
