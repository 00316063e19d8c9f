"""A second process for the world simulator node test: plays the policy (arm and gripper
commands) and the operator (~/reset), and records what the simulator publishes.

Usage: simulator_probe.py OUT_DIR TIMEOUT_S TARGET_JSON
Writes OUT_DIR/result.json.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from world_env_common.ros import qos
from world_env_common.ros.images import rgb_to_image
from world_env_interfaces.srv import ResetEpisode
from probe_loop import ProbeLoop

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]

out_dir, timeout, spec = Path(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
rclpy.init()
node = rclpy.create_node("simulator_probe")
got = {"image": [], "info": [], "joints": [], "clock": [], "predicted": [], "action_map": [], "instruction": [],
       "status": []}
node.create_subscription(Image, "camera/image_raw", lambda m: got["image"].append(m), qos.SENSOR)
node.create_subscription(CameraInfo, "camera/camera_info", lambda m: got["info"].append(m), qos.SENSOR)
node.create_subscription(JointState, "joint_states", lambda m: got["joints"].append(m), qos.SENSOR)
node.create_subscription(Clock, "/clock", lambda m: got["clock"].append(m), qos.SENSOR)
node.create_subscription(Image, "/world_simulator/predicted/image_raw", lambda m: got["predicted"].append(m),
                         qos.COMMAND)
node.create_subscription(Image, "/world_simulator/action_map/image_raw", lambda m: got["action_map"].append(m),
                         qos.COMMAND)
node.create_subscription(String, "task/instruction", lambda m: got["instruction"].append(m.data), qos.LATCHED)
node.create_subscription(String, "/world_simulator/status", lambda m: got["status"].append(json.loads(m.data)),
                         qos.LATCHED)
arm_pub = node.create_publisher(JointTrajectory, "arm_controller/joint_trajectory", qos.COMMAND)
gripper_pub = node.create_publisher(JointTrajectory, "gripper_controller/joint_trajectory", qos.COMMAND)
reset = node.create_client(ResetEpisode, "/world_simulator/reset")
result = {}
loop = ProbeLoop(node, out_dir, time.monotonic() + timeout, result, tick_s=0.01)


def call_reset(request, what):
    future = reset.call_async(request)
    loop.spin_until(future.done, what, 30)
    r = future.result()
    return {"success": r.success, "message": r.message, "episode_id": r.episode_id}


def trajectory(names, positions, after_s):
    msg = JointTrajectory(joint_names=names)
    msg.points = [JointTrajectoryPoint(positions=[float(p) for p in positions],
                                       time_from_start=Duration(sec=int(after_s), nanosec=int(after_s % 1 * 1e9)))]
    return msg


def arm_of(msg):
    return [msg.position[msg.name.index(n)] for n in ARM]


loop.spin_until(lambda: reset.service_is_ready() and arm_pub.get_subscription_count() > 0
                and gripper_pub.get_subscription_count() > 0 and got["status"], "world_simulator_node")
result["before_reset"] = {k: len(v) for k, v in got.items() if k != "status"}

# A bad reset: a frame that cannot be decoded.
bad = Image(height=4, width=4, encoding="32FC1", step=16, data=bytes(64))
result["bad_reset"] = call_reset(ResetEpisode.Request(frame=bad, instruction="x"), "bad reset")

# Reset from a real frame (48x64 bgr8, another size than the model's) and a joint state.
frame = np.zeros((48, 64, 3), np.uint8)
frame[:, :32] = (200, 30, 30)  # left half red (RGB)
joint_state = JointState(name=ARM + FINGERS, position=spec["q0"] + [0.04, -0.04])
result["reset"] = call_reset(ResetEpisode.Request(frame=rgb_to_image(frame, "bgr8"), joint_state=joint_state,
                                                  instruction="put the red block away", episode_id="ep1"), "reset")
loop.spin_until(lambda: len(got["joints"]) >= 5 and len(got["clock"]) >= 5, "five steps", 60)
first = got["image"][0]
result["first_image"] = {"width": first.width, "height": first.height, "encoding": first.encoding}
result["q_start"] = arm_of(got["joints"][0])

# Command a target; after the trajectory's time the joint states report it.
n = len(got["joints"])
arm_pub.publish(trajectory(ARM, spec["target"], 0.1))
gripper_pub.publish(trajectory(FINGERS, [0.0, 0.0], 0.1))
bad_traj = trajectory(ARM, [float("nan")] + spec["target"][1:], 0.1)
arm_pub.publish(bad_traj)  # dropped: the previous target stays
loop.spin_until(lambda: len(got["joints"]) >= n + 8, "eight more steps", 60)
result["q_end"] = arm_of(got["joints"][-1])
result["fingers_end"] = [got["joints"][-1].position[7], got["joints"][-1].position[8]]
stamps = [m.clock.sec + m.clock.nanosec * 1e-9 for m in got["clock"]]
result["clock"] = stamps
result["image_stamps"] = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in got["image"]]
result["info"] = {"width": got["info"][-1].width, "height": got["info"][-1].height,
                  "frame_id": got["info"][-1].header.frame_id}
result["counts"] = {k: len(v) for k, v in got.items()}
result["instruction"] = got["instruction"][-1]

loop.spin_until(lambda: got["status"][-1]["steps"] >= 20, "a status after 20 steps", 60)
result["status"] = got["status"][-1]

# An empty-frame reset starts from the start dataset's next episode.
result["dataset_reset"] = call_reset(ResetEpisode.Request(), "dataset reset")
loop.spin_until(lambda: got["instruction"][-1] != "put the red block away", "the dataset's instruction", 10)
result["dataset_instruction"] = got["instruction"][-1]
(out_dir / "result.json").write_text(json.dumps(result))
node.destroy_node()
rclpy.shutdown()
