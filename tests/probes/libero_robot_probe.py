"""A second node process for the LIBERO stand-in test: plays the policy side of real mode.

Usage: libero_robot_probe.py OUT_DIR TIMEOUT_S
Checks what arrives from libero_robot_node (camera, camera info, joint states, success, the
latched instruction, the publishers' QoS), sends malformed trajectories, an arm trajectory,
a gripper close and a reset, and writes what it saw to OUT_DIR/result.json (the test asserts).
Exits non-zero with a message if the node never appears or a phase runs out of time.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from world_env_common.ros import qos
from probe_loop import ProbeLoop

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
#: The arm move: shoulder and elbow pitch (joints 2 and 4), ~0.15-0.2 rad, over MOVE_S seconds.
DELTA = np.array([0.0, 0.15, 0.0, -0.2, 0.0, 0.0, 0.0])
MOVE_S = 2.0

out_dir, timeout = Path(sys.argv[1]), float(sys.argv[2])
deadline = time.monotonic() + timeout
rclpy.init()
node = rclpy.create_node("libero_robot_probe")
images, infos, states, successes, instructions = [], [], [], [], []
node.create_subscription(Image, "camera/image_raw", images.append, qos.SENSOR)
node.create_subscription(CameraInfo, "camera/camera_info", infos.append, qos.SENSOR)
node.create_subscription(JointState, "joint_states", states.append, qos.SENSOR)
node.create_subscription(Bool, "task/success", successes.append, qos.COMMAND)
arm_pub = node.create_publisher(JointTrajectory, "arm_controller/joint_trajectory", qos.COMMAND)
gripper_pub = node.create_publisher(JointTrajectory, "gripper_controller/joint_trajectory", qos.COMMAND)
reset = node.create_client(Trigger, "/libero_robot/reset")
result = {}


loop = ProbeLoop(node, out_dir, deadline, result, tick_s=0.02)
fail, spin_until, spin_for = loop.fail, loop.spin_until, loop.spin_for


def latest(names):
    msg = states[-1]
    index = {n: i for i, n in enumerate(msg.name)}
    return np.array([msg.position[index[n]] for n in names])


def trajectory(names, points):
    msg = JointTrajectory(joint_names=list(names))  # header.stamp zero: start on receipt
    for t, positions in points:
        msg.points.append(JointTrajectoryPoint(
            positions=[float(p) for p in positions],
            time_from_start=Duration(sec=int(t), nanosec=int(round((t - int(t)) * 1e9)))))
    return msg


# --- Discovery: the node is up once it publishes; our command publishers must be matched.
spin_until(lambda: len(states) > 0 and arm_pub.get_subscription_count() > 0
           and gripper_pub.get_subscription_count() > 0 and reset.service_is_ready(), "libero_robot_node")
result["qos"] = {topic: [info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
                         for info in node.get_publishers_info_by_topic(topic)]
                 for topic in ("camera/image_raw", "camera/camera_info", "joint_states")}

# --- Streams: camera frames with their camera info, joint states, success.
spin_until(lambda: len(images) >= 3 and len(infos) >= 3, "3 camera frames", 20)
stamps = lambda msgs: [(m.header.stamp.sec, m.header.stamp.nanosec) for m in msgs]  # noqa: E731
image, info = images[-1], infos[-1]
result["camera"] = {
    "encoding": image.encoding, "width": image.width, "height": image.height, "step": image.step,
    "bytes": len(image.data), "frame_id": image.header.frame_id, "info_frame_id": info.header.frame_id,
    "info_size": [info.width, info.height], "k": list(info.k),
    "image_stamps_with_info": sum(s in set(stamps(infos)) for s in stamps(images)), "images": len(images),
    "distinct_image_stamps": len(set(stamps(images)))}
msg = states[-1]
result["joint_state"] = {"names": list(msg.name), "positions": len(msg.position), "velocities": len(msg.velocity)}
result["successes"] = [m.data for m in successes]

# --- The instruction is latched: a subscription made now, long after it was published, gets it.
node.create_subscription(String, "task/instruction", instructions.append, qos.LATCHED)
spin_until(lambda: instructions, "the latched instruction", 10)
result["instruction"] = instructions[0].data

# --- Malformed trajectories: each dropped with its reason; the node keeps going.
q0 = latest(ARM)
good = [(1.0, q0)]
nan = q0.copy()
nan[2] = np.nan
arm_pub.publish(trajectory(ARM, [(1.0, nan)]))
arm_pub.publish(trajectory(ARM[:6] + ["elbow_joint"], good))
arm_pub.publish(trajectory(ARM, [(1.0, q0[:6])]))
arm_pub.publish(trajectory(ARM, []))
arm_pub.publish(trajectory(ARM, [(1.0, q0), (1.0, q0)]))
gripper_pub.publish(trajectory(["panda_joint1"], [(1.0, [0.0])]))
n = len(states)
spin_until(lambda: len(states) > n + 10, "joint states after the malformed trajectories", 10)
result["after_malformed_max_motion"] = float(np.abs(latest(ARM) - q0).max())

# --- Arm: joints 2 and 4 to a nearby target over MOVE_S, names in reverse order.
q0 = latest(ARM)
target = q0 + DELTA
arm_pub.publish(trajectory(ARM[::-1], [(MOVE_S, target[::-1])]))
sent = time.monotonic()
track = []  # (seconds since sent, max |q - target|)
while time.monotonic() - sent < MOVE_S + 6.0:
    spin_for(0.1)
    track.append((time.monotonic() - sent, float(np.abs(latest(ARM) - target).max())))
    if track[-1][0] > MOVE_S + 1.0 and track[-1][1] < 0.002:
        break
spin_for(0.5)
result["arm"] = {"q0": q0.tolist(), "target": target.tolist(), "final": latest(ARM).tolist(), "track": track}

# --- Gripper: close both fingers over 0.5 s; the opening shrinks.
opening = lambda: float(latest(FINGERS) @ [1.0, -1.0])  # noqa: E731
before = opening()
gripper_pub.publish(trajectory(FINGERS, [(0.5, [0.0, 0.0])]))
sent = time.monotonic()
while time.monotonic() - sent < 6.0 and opening() > 0.01:
    spin_for(0.1)
spin_for(0.5)
result["gripper"] = {"before": before, "after": opening()}

# --- Reset: the instruction comes back; the arm is back at a LIBERO init state, gripper open.
future = reset.call_async(Trigger.Request())
spin_until(future.done, "the reset service", 20)
n = len(states)
spin_until(lambda: len(states) > n + 5, "joint states after the reset", 10)
result["reset"] = {"success": future.result().success, "message": future.result().message,
                   "q": latest(ARM).tolist(), "opening": opening()}
result["node_alive_states"] = len(states)

(out_dir / "result.json").write_text(json.dumps(result))
node.destroy_node()
rclpy.shutdown()
