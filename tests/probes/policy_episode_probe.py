"""A third node process for the closed-loop test: policy_node drives libero_robot_node; this
probe plays operator and reflector and watches the wire.

Usage: policy_episode_probe.py OUT_DIR TIMEOUT_S STEPS CHECKPOINT_B
Resets the stand-in, enables the policy node, records STEPS arm commands and the joint states meanwhile (the
episode), hot-swaps to CHECKPOINT_B through the parameter service, tries an invalid path,
ends the episode with a done Reflection, resets, disables (the arm must hold), enables again,
then writes OUT_DIR/sigint_ready and keeps recording for SIGINT_WATCH_S while the test stops
the policy node. Times are time.monotonic() (system-wide). Writes OUT_DIR/result.json.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from world_env_common.ros import qos
from world_env_interfaces.msg import Reflection
from probe_loop import ProbeLoop

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
GRACE_S = 0.3  # a command already in flight when the stop was asked may still arrive
SIGINT_WATCH_S = 8.0

out_dir, timeout, steps, checkpoint_b = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + timeout
rclpy.init()
node = rclpy.create_node("policy_episode_probe")
arm, gripper, states, statuses = [], [], [], []
node.create_subscription(JointTrajectory, "arm_controller/joint_trajectory",
                         lambda m: arm.append((time.monotonic(), list(m.joint_names), list(m.points[0].positions))),
                         qos.COMMAND)
node.create_subscription(JointTrajectory, "gripper_controller/joint_trajectory",
                         lambda m: gripper.append((time.monotonic(), list(m.points[0].positions))), qos.COMMAND)
node.create_subscription(JointState, "joint_states", lambda m: states.append((time.monotonic(), m)), qos.SENSOR)
node.create_subscription(String, "/policy/status", lambda m: statuses.append(json.loads(m.data)), qos.LATCHED)
reflection_pub = node.create_publisher(Reflection, "reflection", qos.COMMAND)
enable = node.create_client(SetBool, "/policy/enable")
reset = node.create_client(Trigger, "/policy/reset")
set_params = node.create_client(SetParameters, "/policy/set_parameters")
robot_reset = node.create_client(Trigger, "/libero_robot/reset")
result = {}


loop = ProbeLoop(node, out_dir, deadline, result, tick_s=0.01)
fail, spin_until, spin_for = loop.fail, loop.spin_until, loop.spin_for


def call(client, request, what):
    future = client.call_async(request)
    spin_until(future.done, what, 20)
    return future.result()


def arrivals(t0, t1=None):
    return [a for a in arm if a[0] > t0 and (t1 is None or a[0] <= t1)]


def latest(names=ARM):
    msg = states[-1][1]
    index = {n: i for i, n in enumerate(msg.name)}
    return [msg.position[index[n]] for n in names]


def joints_between(t0, t1):
    """Arm joint positions of the joint states received in (t0, t1]."""
    out = []
    for t, msg in states:
        if t0 < t <= t1:
            index = {n: i for i, n in enumerate(msg.name)}
            out.append([msg.position[index[n]] for n in ARM])
    return out


def wait_commanding(what, limit=20.0):
    t0 = time.monotonic()
    spin_until(lambda: arrivals(t0), f"commands after {what}", limit)
    return arrivals(t0)[0][0] - t0


def set_checkpoint(value):
    request = SetParameters.Request(parameters=[Parameter(
        name="checkpoint", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))])
    r = call(set_params, request, "set_parameters")
    return {"successful": r.results[0].successful, "reason": r.results[0].reason}


def stopped_phase(name, start, restart, hold_s=1.5):
    """Ask the node to stop; record commands after GRACE_S and the joints once the last command
    is done (from 0.6 s on); then restart and wait for commands."""
    t0 = time.monotonic()
    start()
    spin_for(hold_s)
    t1 = time.monotonic()
    held = np.array(joints_between(t0 + 0.6, t1))
    result[name] = {"during": len(arrivals(t0 + GRACE_S, t1)), "before": len(arrivals(t0 - 1.0, t0)),
                    "status_reason": statuses[-1]["reason"],
                    "held_joints": held.tolist()}
    if restart is not None:
        restart()
        result[name]["resumed_after_s"] = wait_commanding(name)


# --- Discovery: the policy node (latched status), the stand-in (joint states), the services.
spin_until(lambda: statuses and states and node.count_publishers("arm_controller/joint_trajectory") > 0
           and reflection_pub.get_subscription_count() > 0 and enable.service_is_ready()
           and reset.service_is_ready() and set_params.service_is_ready() and robot_reset.service_is_ready(),
           "policy_node and libero_robot_node")
result["initial_status"] = statuses[-1]

# --- The episode: reset the stand-in (LIBERO's 1000-step horizon counts from here), enable the
# policy, then STEPS commands.
response = call(robot_reset, Trigger.Request(), "the stand-in's ~/reset")
result["robot_reset"] = {"success": response.success, "message": response.message}
n = len(states)
spin_until(lambda: len(states) > n + 5, "joint states after the reset", 10)
q0 = latest()
response = call(enable, SetBool.Request(data=True), "~/enable")
result["enable"] = response.success
t_enable = time.monotonic()
result["first_command_s"] = wait_commanding("enable", 30)
spin_until(lambda: len(arrivals(t_enable)) >= steps, f"{steps} commands", 60)
episode = arrivals(t_enable)[:steps]
t_end = episode[-1][0]
spin_for(0.3)
# ~/status comes at most every 0.5 s while nothing changes: wait for one that counts the episode.
spin_until(lambda: statuses[-1].get("steps", 0) >= steps, "a status counting the episode's steps", 5)
result["episode"] = {
    "q0": q0, "q_end": latest(), "names": episode[0][1], "targets": [a[2] for a in episode],
    "seconds": t_end - episode[0][0], "gripper_targets": [g[1] for g in gripper if t_enable < g[0] <= t_end],
    "joint_track": joints_between(t_enable, t_end), "status": statuses[-1]}

# --- Hot swap while commanding: the old policy keeps running until the new one is in.
t0 = time.monotonic()
result["swap"] = {"set": set_checkpoint(checkpoint_b)}
spin_until(lambda: statuses[-1]["checkpoint"] == checkpoint_b, "the swapped checkpoint in the status", 60)
t1 = time.monotonic()
result["swap"].update(seconds=t1 - t0, commands_while_loading=len(arrivals(t0, t1)))
spin_for(0.5)
result["swap"]["commands_after"] = len(arrivals(t1))
t0 = time.monotonic()
result["invalid"] = {"set": set_checkpoint("/nonexistent/checkpoint")}
spin_for(1.0)
result["invalid"].update(status=statuses[-1], commands_after=len(arrivals(t0)))


# --- The reflector ends the episode; ~/reset starts the next.
def done():
    msg = Reflection(reward=0.8, done=True, threshold=0.5, step=steps)
    msg.header.stamp = node.get_clock().now().to_msg()
    reflection_pub.publish(msg)


stopped_phase("reflection_done", done, lambda: call(reset, Trigger.Request(), "~/reset"))
stopped_phase("disabled", lambda: call(enable, SetBool.Request(data=False), "~/enable false"),
              lambda: call(enable, SetBool.Request(data=True), "~/enable true"))

# --- SIGINT: the test stops the policy node now.
spin_for(0.5)
t_ready = time.monotonic()
result["sigint"] = {"ready": t_ready}
(out_dir / "sigint_ready").write_text(str(t_ready))
spin_for(SIGINT_WATCH_S)
result["sigint"].update(arrivals=[a[0] for a in arrivals(t_ready)],
                        joints=[(t, [m.position[m.name.index(n)] for n in ARM]) for t, m in states if t > t_ready],
                        last_status=statuses[-1])
(out_dir / "result.json").write_text(json.dumps(result))
node.destroy_node()
rclpy.shutdown()
