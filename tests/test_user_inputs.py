"""What a user of the launch file sends the nodes, over real DDS: instructions from volatile and
latched publishers (as ``ros2 topic pub`` and driver nodes send them), an oversized instruction,
a driver whose joints have other names (``joint_names`` launch arguments), and the policy's rate
report when it runs on the simulator's clock."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rosutil import kill, node_executable, ros_env, stop
from world_env_bringup.graph import graph
from world_env_common.ros.inputs import MAX_INSTRUCTION_CHARS

PROBES = Path(__file__).parent / "probes"


def _tiny_reflector(path: Path) -> str:
    import torch

    from world_env_training.models.reflector import Reflector, ReflectorConfig

    torch.manual_seed(0)
    Reflector(ReflectorConfig.tiny(threshold=0.99)).save_pretrained(path)
    return str(path)


def _longest_line(log: str) -> int:
    return max((len(line) for line in log.splitlines()), default=0)


@pytest.mark.ros
def test_instructions_from_any_publisher_reach_both_nodes_and_oversized_ones_are_refused(tmp_path):
    env = ros_env(tmp_path)
    nodes = graph(mode="real", policy="zero", reflector=_tiny_reflector(tmp_path / "reflector"),
                  joint_names="[joint1, joint2, joint3, joint4, joint5, joint6, joint7]",
                  finger_joint_names="finger_joint1,finger_joint2")
    probe = subprocess.Popen([sys.executable, str(PROBES / "user_input_probe.py"), str(tmp_path), "150"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = []
    try:
        end = time.monotonic() + 30
        while not (tmp_path / "ready").exists() and probe.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        # The nodes start after the latched instruction was published.
        procs = [subprocess.Popen([str(node_executable(n.package, n.executable)), *n.ros_args()], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in nodes]
        _, probe_err = probe.communicate(timeout=180)
        alive = [p.poll() is None for p in procs]
        logs = {n.name: stop(p)[1] for n, p in zip(nodes, procs)}
    finally:
        for p in [probe, *procs]:
            kill(p)
    diag = f"probe rc={probe.returncode}\n{probe_err[-3000:]}\n" + "\n".join(
        f"--- {k}:\n{v[-3000:]}" for k, v in logs.items())
    assert probe.returncode == 0 and all(alive), diag
    assert all("Traceback" not in log for log in logs.values()), diag
    result = json.loads((tmp_path / "result.json").read_text())

    # The foreign driver's joint names, from the launch arguments, reach the commands.
    assert result["arm_names"] == [f"joint{i}" for i in range(1, 8)]
    assert result["gripper_names"] == ["finger_joint1", "finger_joint2"]
    # Each `ros2 topic pub --once -w 2` reached both nodes (one volatile match per node).
    rounds = result["rounds"]
    assert len(rounds) == 5 and all(r["matched"] == 2 for r in rounds), rounds
    # The oversized one: refused by both with the reason, nothing commanded or judged meanwhile.
    refused = result["refused"]
    assert refused["status"]["reason"].startswith(
        f"instruction refused: 1000000 characters, more than the {MAX_INSTRUCTION_CHARS} allowed"), refused
    assert refused["arm_during"] == 0 and refused["reflections_during"] == 0, refused
    assert result["after"]["status"]["instruction"] == "put the bowl on the plate"
    for name, log in logs.items():
        # Each sample once, though a latched publisher matches both of a node's subscriptions.
        assert log.count("]: instruction refused: 1000000 characters") == 1, (name, log[-3000:])
        assert _longest_line(log) < 600, (name, _longest_line(log))
        # No false alarm: the volatile publishers are heard (rclpy's default would warn that the
        # transient_local subscription cannot match them).
        assert "incompatible QoS" not in log, (name, log[-3000:])
    assert logs["reflector"].count("instruction: 'instruction number") == 5, logs["reflector"][-3000:]


@pytest.mark.ros
def test_policy_rate_report_runs_on_the_nodes_clock(tmp_path):
    env = ros_env(tmp_path)
    cmd = [str(node_executable("world_env_policy", "policy_node")), "--ros-args", "-p", "checkpoint:=zero",
           "-p", "use_sim_time:=true", "-p", "stale_after_s:=1.0", "--log-level", "policy:=debug"]
    node = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        probe = subprocess.run([sys.executable, str(PROBES / "sim_clock_probe.py"), str(tmp_path), "120"],
                               env=env, capture_output=True, text=True, timeout=150)
        alive = node.poll() is None
        _, log = stop(node)
    finally:
        kill(node)
    diag = f"probe rc={probe.returncode}\n{probe.stderr[-3000:]}\nnode:\n{log[-4000:]}"
    assert probe.returncode == 0 and alive and "Traceback" not in log, diag
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["slow"]["commands"] > 150 and result["jumps"]["commands"] > 30, result
    # Slower than real time on the wall clock, on time on sim time: the rate (a debug line every
    # 5 s of the node's clock) is 20 Hz. Jumps of four periods per tick: 5 Hz of sim time (the last,
    # whole window), and the warning (throttled: once) says the node cannot keep up.
    rates = [float(r) for r in re.findall(r"achieved rates: ticks ([\d.]+) Hz", log)]
    assert len(rates) >= 4 and rates[0] >= 18.0 and 4.0 <= rates[-1] <= 6.0, (rates, diag)
    warnings = re.findall(r"control loop cannot keep up: ([\d.]+) Hz of 20 Hz", log)
    assert len(warnings) == 1 and float(warnings[0]) < 18.0, diag
