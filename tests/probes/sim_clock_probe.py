"""A probe for the policy node's rate report on sim time: it is the simulator (/clock, camera,
joint states, all stamped on sim time) and the instruction, and enables the policy.

Usage: sim_clock_probe.py OUT_DIR TIMEOUT_S
Phase "slow": sim time advances one control period (0.05 s) every 0.08 s of wall time, as a world
model that predicts slower than real time (the node keeps the simulator's pace: no warning due).
Phase "jumps": sim time advances four periods per step (the node ticks once per step: 5 Hz of
sim time, too slow for 20 Hz). Each phase lasts SIM_S seconds of sim time. Records the
monotonic wall time at which each phase ended in OUT_DIR/result.json.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from world_env_common.ros import qos
from probe_loop import ProbeLoop

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
Q = [0.0, -0.16, 0.0, -2.44, 0.0, 2.23, 0.79]
PERIOD_NS = 50_000_000
SIM_S = 11.0  # two rate reports (every 5 s of the node's clock) in each phase

out_dir, timeout = Path(sys.argv[1]), float(sys.argv[2])
rclpy.init()
node = rclpy.create_node("sim_clock_probe")
result = {}
loop = ProbeLoop(node, out_dir, time.monotonic() + timeout, result, tick_s=0.005)
commands = []
node.create_subscription(JointTrajectory, "arm_controller/joint_trajectory", lambda m: commands.append(1),
                         qos.COMMAND)
clock_pub = node.create_publisher(Clock, "/clock", qos.SENSOR)
camera_pub = node.create_publisher(Image, "camera/image_raw", qos.SENSOR)
joint_pub = node.create_publisher(JointState, "joint_states", qos.SENSOR)
instruction_pub = node.create_publisher(String, "instruction", qos.LATCHED)
instruction_pub.publish(String(data="put the bowl on the plate"))
pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8).tobytes()
sim_ns = 1000 * 1_000_000_000  # sim time does not start at 0


def step(periods):
    global sim_ns
    sim_ns += periods * PERIOD_NS
    stamp = Time(sec=sim_ns // 1_000_000_000, nanosec=sim_ns % 1_000_000_000)
    clock_pub.publish(Clock(clock=stamp))
    image = Image(height=64, width=64, encoding="rgb8", step=64 * 3, data=pixels)
    image.header.stamp = stamp
    camera_pub.publish(image)
    joints = JointState(name=ARM + FINGERS, position=[*Q, 0.04, -0.04])
    joints.header.stamp = stamp
    joint_pub.publish(joints)


enable = node.create_client(SetBool, "/policy/enable")
loop.spin_until(lambda: enable.service_is_ready() and clock_pub.get_subscription_count() > 0, "the policy node")
future = enable.call_async(SetBool.Request(data=True))
while not future.done():
    step(1)
    loop.spin_for(0.08)
for phase, periods, wall_s in (("slow", 1, 0.08), ("jumps", 4, 0.05)):
    end_ns = sim_ns + int(SIM_S * 1e9)
    before = len(commands)
    while sim_ns < end_ns:
        step(periods)
        loop.spin_for(wall_s)
        if time.monotonic() > loop.deadline:
            loop.fail(f"phase {phase} did not finish in time")
    result[phase] = {"ended": time.monotonic(), "commands": len(commands) - before}
(out_dir / "result.json").write_text(json.dumps(result))
node.destroy_node()
rclpy.shutdown()
