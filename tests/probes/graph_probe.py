"""A probe for the launch-graph tests: optionally enables the policy, then waits until the
graph has produced enough of each output and records what it saw.

Usage: graph_probe.py OUT_DIR TIMEOUT_S SPEC_JSON
SPEC: {"enable": bool, "want": {"arm": n, "reflection": n, "clock": n, "joints": n},
       "trainer_updates": n (optional: also wait for the LOOP trainer's n-th update and the policy's swap),
       "displays": [{"topic", "type", "reliability", "durability", "depth"}] (optional: rviz displays;
                    each topic's publishers and one message received with the display's QoS)}
Writes OUT_DIR/result.json.
"""

import importlib
import json
import sys
import time
from pathlib import Path

import rclpy
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSCompatibility, QoSProfile,
                       ReliabilityPolicy, qos_check_compatible)
from sensor_msgs.msg import CameraInfo
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from world_env_common.ros import qos
from world_env_interfaces.msg import Reflection
from probe_loop import ProbeLoop

out_dir, timeout, spec = Path(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
rclpy.init()
node = rclpy.create_node("graph_probe")
got = {"arm": [], "reflection": [], "clock": [], "joints": []}
node.create_subscription(JointTrajectory, "arm_controller/joint_trajectory",
                         lambda m: got["arm"].append(list(m.points[0].positions)), qos.COMMAND)
node.create_subscription(Reflection, "reflection", lambda m: got["reflection"].append(
    {"reward": m.reward, "done": m.done, "stamp": m.header.stamp.sec + m.header.stamp.nanosec * 1e-9}), qos.COMMAND)
node.create_subscription(Clock, "/clock", lambda m: got["clock"].append(m.clock.sec + m.clock.nanosec * 1e-9),
                         qos.SENSOR)
node.create_subscription(JointState, "joint_states", lambda m: got["joints"].append(list(m.position[:7])), qos.SENSOR)
frames = {}
node.create_subscription(CameraInfo, "camera/camera_info", lambda m: frames.setdefault("info", m.header.frame_id),
                         qos.SENSOR)
displays = spec.get("displays", [])
shown = {}


def _display_subscription(display):
    package, _, name = display["type"].split("/")
    msg_type = getattr(importlib.import_module(f"{package}.msg"), name)
    profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=display["depth"],
                         reliability=ReliabilityPolicy[display["reliability"].upper().replace(" ", "_")],
                         durability=DurabilityPolicy[display["durability"].upper().replace(" ", "_")],
                         liveliness=LivelinessPolicy.AUTOMATIC)  # what the system default is (rviz's)
    node.create_subscription(msg_type, display["topic"],
                             lambda m: shown.setdefault(display["topic"], getattr(m, "header", None)), profile)
    return profile


profiles = [_display_subscription(d) for d in displays]
statuses = {"trainer": [], "policy": []}
node.create_subscription(String, "/loop_trainer/status", lambda m: statuses["trainer"].append(json.loads(m.data)),
                         qos.LATCHED)
node.create_subscription(String, "/policy/status", lambda m: statuses["policy"].append(json.loads(m.data)),
                         qos.LATCHED)
enable = node.create_client(SetBool, "/policy/enable")
result = {}
loop = ProbeLoop(node, out_dir, time.monotonic() + timeout, result, tick_s=0.01)
loop.spin_until(lambda: enable.service_is_ready(), "the policy node's ~/enable")
if spec["enable"]:
    future = enable.call_async(SetBool.Request(data=True))
    loop.spin_until(future.done, "~/enable", 20)
    result["enabled"] = future.result().success
want = spec["want"]
result["want"] = want


def enough():
    result["counts"] = {k: len(v) for k, v in got.items()}
    return all(len(got[k]) >= n for k, n in want.items())


loop.spin_until(enough, f"outputs {want}")
updates = spec.get("trainer_updates", 0)
if updates:
    loop.spin_until(lambda: statuses["trainer"] and statuses["trainer"][-1]["update"] >= updates,
                    f"{updates} LOOP update(s)")
    trainer = statuses["trainer"][-1]
    loop.spin_until(lambda: statuses["policy"][-1]["checkpoint"] == trainer["checkpoint"], "the policy's swap", 120)
    result["trainer"], result["policy_status"] = trainer, statuses["policy"][-1]
if displays:
    loop.spin_until(lambda: len(shown) == len(displays), f"a message on each rviz display's topic "
                    f"{[d['topic'] for d in displays]}", 60)
    result["displays"] = {}
    for display, profile in zip(displays, profiles):
        publishers = node.get_publishers_info_by_topic(display["topic"])
        result["displays"][display["topic"]] = {
            "publishers": [{"node": p.node_name, "type": p.topic_type,
                            "compatible": qos_check_compatible(p.qos_profile, profile)[0] == QoSCompatibility.OK}
                           for p in publishers],
            "frame_id": shown[display["topic"]].frame_id}
loop.spin_until(lambda: "info" in frames, "camera_info", 10)
result["camera_frame_id"] = frames["info"]
result["arm_first"], result["arm_last"] = (got["arm"][0], got["arm"][-1]) if got["arm"] else (None, None)
result["joints_first"], result["joints_last"] = got["joints"][0], got["joints"][-1]
result["clock"] = got["clock"][-50:]
result["reflection"] = got["reflection"][-5:]
(out_dir / "result.json").write_text(json.dumps(result))
node.destroy_node()
rclpy.shutdown()
