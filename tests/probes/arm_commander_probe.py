"""Plays a teleoperator for the recording test: sweeps the arm between two joint targets with
trajectory commands at 10 Hz (and closes the gripper), as a driver would receive them.

Usage: arm_commander_probe.py OUT_DIR TIMEOUT_S STEPS
Writes OUT_DIR/result.json with the number of commands sent.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from world_env_common.ros import qos
from probe_loop import ProbeLoop

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]

out_dir, timeout, steps = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
rclpy.init()
node = rclpy.create_node("arm_commander_probe")
states = []
node.create_subscription(JointState, "joint_states", states.append, qos.SENSOR)
arm = node.create_publisher(JointTrajectory, "arm_controller/joint_trajectory", qos.COMMAND)
gripper = node.create_publisher(JointTrajectory, "gripper_controller/joint_trajectory", qos.COMMAND)
result = {}
loop = ProbeLoop(node, out_dir, time.monotonic() + timeout, result, tick_s=0.01)
loop.spin_until(lambda: states and arm.get_subscription_count() > 0 and gripper.get_subscription_count() > 0,
                "the stand-in")
first = states[-1]
q0 = np.array([first.position[first.name.index(n)] for n in ARM])
period = 0.1
for k in range(steps):
    # Out 0.3 rad on joints 1 and 4 and back: end-effector motion of several cm.
    phase = np.sin(np.pi * k / steps)
    target = q0 + phase * np.array([0.3, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0])
    msg = JointTrajectory(joint_names=ARM, points=[JointTrajectoryPoint(
        positions=target.tolist(), time_from_start=Duration(nanosec=int(period * 1e9)))])
    arm.publish(msg)
    width = 0.0 if k > steps // 2 else 0.04
    gripper.publish(JointTrajectory(joint_names=FINGERS, points=[JointTrajectoryPoint(
        positions=[width, -width], time_from_start=Duration(nanosec=int(period * 1e9)))]))
    loop.spin_for(period)
result["commands"] = steps
(out_dir / "result.json").write_text(json.dumps(result))
node.destroy_node()
rclpy.shutdown()
