"""A second node process for the policy node's bad-input test: plays camera, arm and reflector.

Usage: policy_input_probe.py OUT_DIR TIMEOUT_S
Feeds policy_node good inputs (camera 10 Hz, joint states 20 Hz, the instruction, latched),
enables it, then sends one kind of bad input at a time (unsupported encoding, data size and
step mismatches, NaN and missing joints, an empty instruction, a camera that stops), each
followed by good inputs again; then disables, re-enables, sends a done Reflection and resets.
Records when arm trajectories arrive (time.monotonic, system-wide) and writes OUT_DIR/result.json
(the test asserts). Exits non-zero with a message if the node never appears or a phase times out.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from world_env_common.ros import qos
from world_env_interfaces.msg import Reflection
from probe_loop import ProbeLoop

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
Q = [0.0, -0.16, 0.0, -2.44, 0.0, 2.23, 0.79]
INSTRUCTION = "pick up the alphabet soup and place it in the basket"
#: Seconds after a bad input is first sent before a trajectory counts as sent during it (the
#: node refuses from its next tick, 50 ms; a trajectory already in flight may still arrive).
GRACE_S = 0.3
BAD_S = 1.5  # how long each bad input lasts

out_dir, timeout = Path(sys.argv[1]), float(sys.argv[2])
deadline = time.monotonic() + timeout
rclpy.init()
node = rclpy.create_node("policy_input_probe")
arm, gripper, statuses = [], [], []  # arm/gripper: (monotonic receipt time, positions)
node.create_subscription(JointTrajectory, "arm_controller/joint_trajectory",
                         lambda m: arm.append((time.monotonic(), list(m.points[0].positions), m)), qos.COMMAND)
node.create_subscription(JointTrajectory, "gripper_controller/joint_trajectory",
                         lambda m: gripper.append((time.monotonic(), list(m.points[0].positions))), qos.COMMAND)
node.create_subscription(String, "/policy/status", lambda m: statuses.append(json.loads(m.data)), qos.LATCHED)
camera_pub = node.create_publisher(Image, "camera/image_raw", qos.SENSOR)
joint_pub = node.create_publisher(JointState, "joint_states", qos.SENSOR)
instruction_pub = node.create_publisher(String, "instruction", qos.LATCHED)
reflection_pub = node.create_publisher(Reflection, "reflection", qos.COMMAND)
enable = node.create_client(SetBool, "/policy/enable")
reset = node.create_client(Trigger, "/policy/reset")
mode = {"camera": "good", "joints": "good"}
result = {"phases": {}}


loop = ProbeLoop(node, out_dir, deadline, result, tick_s=0.01)
fail, spin_until, spin_for = loop.fail, loop.spin_until, loop.spin_for


def camera_msg():
    pixels = np.random.default_rng(0).integers(0, 255, (72, 96, 3), dtype=np.uint8)  # any size
    msg = Image(height=72, width=96, encoding="rgb8", step=96 * 3, data=pixels.tobytes())
    if mode["camera"] == "encoding":
        msg.encoding = "32FC1"
    elif mode["camera"] == "size":
        msg.data = pixels.tobytes()[:1000]
    elif mode["camera"] == "step":
        msg.step = 100
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


def joint_msg():
    names, positions = ARM + FINGERS, [*Q, 0.04, -0.04]
    if mode["joints"] == "nan":
        positions[2] = float("nan")
    elif mode["joints"] == "missing":
        names, positions = names[1:], positions[1:]
    msg = JointState(name=names, position=positions)
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


def publish_camera():
    if mode["camera"] != "none":
        camera_pub.publish(camera_msg())


node.create_timer(0.1, publish_camera)
node.create_timer(0.05, lambda: joint_pub.publish(joint_msg()))


def call(client, request, what):
    future = client.call_async(request)
    spin_until(future.done, what, 10)
    return future.result()


def arrivals_after(t0, t1=None):
    return [t for t, *_ in arm if t > t0 and (t1 is None or t <= t1)]


def wait_commanding(what, limit=10.0):
    t0 = time.monotonic()
    spin_until(lambda: arrivals_after(t0), f"commands again after {what}", limit)
    return arrivals_after(t0)[0] - t0


def bad_phase(name, start, stop, grace=GRACE_S):
    """Run one bad input for BAD_S seconds, then good inputs until commands resume. Commands
    count as sent during it from ``grace`` seconds after it began."""
    t_bad = time.monotonic()
    start()
    spin_for(BAD_S)
    t_good = time.monotonic()
    during = len(arrivals_after(t_bad + grace, t_good))
    reason = statuses[-1]["reason"] if statuses else None
    stop()
    resumed_after = wait_commanding(name)
    result["phases"][name] = {"during": during, "status_reason": reason, "resumed_after_s": resumed_after,
                              "before": len(arrivals_after(t_bad - 1.0, t_bad))}


def set_mode(key, value):
    def apply():
        mode[key] = value
        (publish_camera if key == "camera" else lambda: joint_pub.publish(joint_msg()))()
    return apply


# --- Discovery: the node's status (latched) and the matched command and input topics.
spin_until(lambda: statuses and node.count_publishers("arm_controller/joint_trajectory") > 0
           and camera_pub.get_subscription_count() > 0 and joint_pub.get_subscription_count() > 0
           and reflection_pub.get_subscription_count() > 0 and enable.service_is_ready()
           and reset.service_is_ready(), "policy_node")
instruction_pub.publish(String(data=INSTRUCTION))
result["initial_status"] = statuses[-1]
spin_for(1.0)
result["disabled_commands"] = len(arm)  # disabled at start: nothing
response = call(enable, SetBool.Request(data=True), "~/enable")
result["enable"] = {"success": response.success, "message": response.message}
result["first_command_s"] = wait_commanding("enable", 15)
spin_for(1.0)
first = arm[-1][2]
result["command"] = {"names": list(first.joint_names), "positions": list(first.points[0].positions),
                     "time_from_start": first.points[0].time_from_start.nanosec * 1e-9
                     + first.points[0].time_from_start.sec, "stamp": first.header.stamp.sec,
                     "gripper": gripper[-1][1]}
t = time.monotonic()
spin_for(2.0)
result["command_rate_hz"] = len(arrivals_after(t)) / 2.0

# --- Bad inputs, one at a time.
for name, key in [("encoding", "camera"), ("size", "camera"), ("step", "camera"), ("nan", "joints"),
                  ("missing", "joints")]:
    bad_phase(name, set_mode(key, name), set_mode(key, "good"))
bad_phase("empty_instruction", lambda: instruction_pub.publish(String(data="")),
          lambda: instruction_pub.publish(String(data=INSTRUCTION)))
# The last frame stays usable for stale_after_s (0.5 s in the test) after the camera stops.
bad_phase("no_camera", set_mode("camera", "none"), set_mode("camera", "good"), grace=0.5 + GRACE_S)

# --- Disable: commands stop; enable: they resume.
bad_phase("disabled", lambda: call(enable, SetBool.Request(data=False), "~/enable false"),
          lambda: call(enable, SetBool.Request(data=True), "~/enable true"))


# --- A done verdict for this episode stops the commands until ~/reset.
def done():
    msg = Reflection(reward=0.9, done=True, threshold=0.5, step=12, episode_id="ep-1")
    msg.header.stamp = node.get_clock().now().to_msg()
    reflection_pub.publish(msg)


bad_phase("reflection_done", done, lambda: call(reset, Trigger.Request(), "~/reset"))
spin_for(0.3)  # the status of the tick that commanded again
result["final_status"] = statuses[-1]
result["commands"] = len(arm)
(out_dir / "result.json").write_text(json.dumps(result))
node.destroy_node()
rclpy.shutdown()
