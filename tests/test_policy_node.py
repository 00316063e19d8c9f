"""policy_node over real DDS on loopback: bad inputs against a probe node (each refused with its
reason, logged once, commands resuming after), configuration errors, and a closed loop with the
LIBERO hardware stand-in (a tiny random VLA through an episode, hot swap, reflector termination,
disable and SIGINT)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rosutil import kill, node_executable, ros_env, stop

PROBES = Path(__file__).parent / "probes"
ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
Q = [0.0, -0.16, 0.0, -2.44, 0.0, 2.23, 0.79]


def start_policy_node(env, *ros_args):
    cmd = [str(node_executable("world_env_policy", "policy_node")), "--ros-args", *ros_args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.ros
def test_bad_inputs_are_refused_with_a_reason_and_the_node_recovers(tmp_path):
    env = ros_env(tmp_path)
    node = start_policy_node(env, "-p", "checkpoint:=zero", "-p", "stale_after_s:=0.5")
    try:
        probe = subprocess.run([sys.executable, str(PROBES / "policy_input_probe.py"), str(tmp_path), "100"],
                               env=env, capture_output=True, text=True, timeout=120)
        alive = node.poll() is None
        _, log = stop(node)
    finally:
        kill(node)
    diag = f"probe rc={probe.returncode}\n{probe.stderr[-3000:]}\nnode:\n{log[-5000:]}"
    assert probe.returncode == 0, diag
    assert alive, "policy_node died\n" + diag
    assert node.returncode == 0 and "Traceback" not in log, diag
    result = json.loads((tmp_path / "result.json").read_text())

    # Disabled at start: no commands until ~/enable; then one per control period.
    assert result["initial_status"]["enabled"] is False and result["initial_status"]["checkpoint"] == "zero"
    assert result["disabled_commands"] == 0
    assert result["enable"]["success"], result["enable"]
    assert result["command_rate_hz"] > 12, result["command_rate_hz"]  # 20 Hz nominal, loaded CPU
    cmd = result["command"]
    assert cmd["names"] == ARM and cmd["time_from_start"] == pytest.approx(0.05) and cmd["stamp"] == 0
    assert np.abs(np.array(cmd["positions"]) - Q).max() < 0.05  # the zero policy holds the pose
    assert cmd["gripper"] == [0.04, -0.04]

    # Each bad input: the reason logged once, no command while it lasts, commands after it.
    reasons = {
        "encoding": "bad camera input: unsupported encoding '32FC1'",
        "size": "bad camera input: data has 1000 bytes, expected step 288 x height 72 = 20736",
        "step": "bad camera input: step 100 is smaller than width 96 x 3 channels",
        "nan": "bad joint_states input: non-finite position for joint(s) ['panda_joint3']",
        "missing": "bad joint_states input: missing joint(s) ['panda_joint1']",
        "empty_instruction": "empty instruction",
        "no_camera": "camera stale: no valid frame for more than 0.5 s",
        "disabled": "disabled",
        "reflection_done": "episode terminated: the reflector judged it done, reward 0.90",
    }
    for phase, reason in reasons.items():
        got = result["phases"][phase]
        assert got["before"] > 0, (phase, got)  # it was commanding when the bad input came
        assert got["during"] == 0, (phase, got, diag)
        assert got["status_reason"].startswith(reason), (phase, got)
        assert got["resumed_after_s"] < 3.0, (phase, got)
        assert log.count(f"not commanding: {reason}") == 1, (phase, diag)
    assert result["final_status"]["enabled"] and result["final_status"]["reason"] is None


@pytest.mark.ros
def test_policy_node_config_errors_exit_2(tmp_path):
    env = ros_env(tmp_path)
    for args, expected in [([], "parameter checkpoint: no checkpoint given"),
                           (["-p", f"checkpoint:={tmp_path / 'none'}"], "does not exist"),
                           (["-p", "checkpoint:=expert"], "privileged state"),
                           (["-p", "checkpoint:=zero", "-p", "workspace_min:=[1.0, 0.0, 0.0]"],
                            "must be below workspace_max"),
                           (["-p", "checkpoint:=zero", "-p", "control_rate_hz:=0"],
                            "control_rate_hz must be a positive"),
                           (["-p", "checkpoint:=zero", "-p", "base_quat_wxyz:=[1.0, 1.0, 0.0, 0.0]"],
                            "unit quaternion"),
                           (["-p", "checkpoint:=zero", "-p", "joint_names:=[a, b]"], "need 7 arm joint names")]:
        proc = start_policy_node(env, *args)
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            kill(proc)
        assert proc.returncode == 2, err
        assert expected in err and "Traceback" not in err, err


# ---------------------------------------------------------------------- closed loop with LIBERO
EPISODE_STEPS = 60
BASE = [-0.6, 0.0, 0.0]  # libero_object's robot base in the scene: the frame of the policy's state
# A box 2 cm around the arm's start (base frame, x 0.447, y -0.006, z 0.248 in libero_object's
# init state 0), so that a random policy meets its walls within the episode.
BOX_MIN, BOX_MAX = [0.427, -0.026, 0.228], [0.467, 0.014, 0.268]
BOX_TOL_M = 0.002  # IK position tolerance is 1 mm


def _tiny_checkpoint(path, seed):
    """A random tiny VLA whose actions stay small: +-1 position, +-0.1 rotation (LIBERO units)."""
    import torch

    from world_env_training.models.vla import VLAConfig, VLAPolicy

    torch.manual_seed(seed)
    half = torch.tensor([1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 1.0])
    stats = {"action_low": -half, "action_high": half, "state_mean": torch.zeros(7), "state_std": torch.ones(7)}
    VLAPolicy(VLAConfig.tiny(backbone_seed=seed), stats).save_pretrained(path)
    return str(path)


@pytest.mark.ros
@pytest.mark.libero
def test_policy_node_closes_the_loop_with_the_libero_stand_in(tmp_path, report):
    pytest.importorskip("libero.libero")
    env = ros_env(tmp_path)
    robot_cmd = [str(node_executable("world_env_libero", "libero_robot_node")), "--ros-args",
                 "-p", "suite:=libero_object", "-p", "task_id:=0", "-p", "resolution:=128",
                 # starts in init state 49; the probe's ~/reset then starts the episode in init
                 # state 0 (robosuite ends an episode after 1000 steps, 50 s, counted from a reset)
                 "-p", "init_state_id:=49"]
    robot = subprocess.Popen(robot_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    policy = probe = None
    try:
        ckpt_a = _tiny_checkpoint(tmp_path / "vla_a", 0)  # while LIBERO loads
        ckpt_b = _tiny_checkpoint(tmp_path / "vla_b", 1)
        policy = start_policy_node(
            env, "-p", f"checkpoint:={ckpt_a}", "-p", f"base_position:={BASE}", "-p", f"workspace_min:={BOX_MIN}",
            "-p", f"workspace_max:={BOX_MAX}", "-p", "success_topic:=task/success",
            "-r", "instruction:=task/instruction", "--log-level", "policy:=debug")
        probe = subprocess.Popen([sys.executable, str(PROBES / "policy_episode_probe.py"), str(tmp_path), "150",
                                  str(EPISODE_STEPS), ckpt_b],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = tmp_path / "sigint_ready"
        end = time.monotonic() + 160
        while not ready.exists() and probe.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        sigint_at = None
        if ready.exists():
            time.sleep(1.0)  # commands flow, then SIGINT
            sigint_at = time.monotonic()
            _, policy_log = stop(policy, signal.SIGINT, timeout=10)
            stopped_s = time.monotonic() - sigint_at
        probe_out, probe_err = probe.communicate(timeout=60)
        robot_alive = robot.poll() is None
        if sigint_at is None:
            _, policy_log = stop(policy)
        _, robot_log = stop(robot)
    finally:
        for proc in (probe, policy, robot):
            if proc is not None:
                kill(proc)
    robot_log = "\n".join(line for line in robot_log.splitlines() if "robosuite WARNING" not in line)
    diag = (f"probe rc={probe.returncode}\n{probe_err[-3000:]}\npolicy node:\n{policy_log[-5000:]}\n"
            f"robot node:\n{robot_log[-2000:]}")
    assert probe.returncode == 0 and sigint_at is not None, diag
    assert robot_alive, "libero_robot_node died\n" + diag
    assert policy.returncode == 0 and "Traceback" not in policy_log, diag
    assert stopped_s < 5.0, f"policy_node took {stopped_s:.1f} s to stop on SIGINT"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["initial_status"]["enabled"] is False and result["initial_status"]["checkpoint"] == ckpt_a
    assert result["robot_reset"]["success"], result["robot_reset"]

    # The episode: STEPS commands within the joint limits and the workspace box; the arm moved.
    from world_env_common.robot import PandaModel

    model = PandaModel()  # base at the origin: FK gives base-frame positions
    ep = result["episode"]
    targets = np.array(ep["targets"])
    assert ep["names"] == ARM and targets.shape == (EPISODE_STEPS, 7)
    assert np.all(targets >= model.lower) and np.all(targets <= model.upper)
    eef = np.array([model.fk(q)[0] for q in targets])
    assert np.all(eef >= np.array(BOX_MIN) - BOX_TOL_M) and np.all(eef <= np.array(BOX_MAX) + BOX_TOL_M), eef
    track = np.array([model.fk(q)[0] for q in ep["joint_track"]])
    moved = float(np.linalg.norm(track - track[0], axis=1).max())
    assert moved > 0.005, f"the arm moved only {moved * 1e3:.1f} mm"
    assert all(g in ([0.04, -0.04], [0.0, 0.0]) for g in ep["gripper_targets"]), ep["gripper_targets"][:5]
    status = ep["status"]
    assert status["steps"] >= EPISODE_STEPS - 1 and status["inference_ms_mean"] is not None
    rate = (EPISODE_STEPS - 1) / ep["seconds"]
    report(f"policy_node + libero_robot_node: {EPISODE_STEPS} commands at {rate:.1f} Hz (control_rate_hz 20), "
           f"tiny VLA inference {status['inference_ms_mean']:.1f} ms per chunk of 4 (mean), "
           f"{status['replans']} replans; eef moved up to {moved * 1e3:.0f} mm, "
           f"{status['clamped_steps']} of {status['steps']} targets clamped to the box")
    assert rate > 12, rate
    assert status["clamped_steps"] > 0  # the box was met

    # Hot swap: the new checkpoint runs; an invalid path is refused with the reason, the old one runs on.
    swap = result["swap"]
    assert swap["set"]["successful"] and swap["commands_after"] > 0, swap
    invalid = result["invalid"]
    assert not invalid["set"]["successful"], invalid
    assert invalid["set"]["reason"] == "checkpoint /nonexistent/checkpoint does not exist"
    assert invalid["status"]["checkpoint"] == ckpt_b and invalid["commands_after"] > 0, invalid
    assert f"hot-swapped the policy: now running {ckpt_b}" in policy_log
    report(f"policy_node hot swap: {swap['seconds']:.2f} s until the status showed the new checkpoint, "
           f"{swap['commands_while_loading']} commands from the old policy meanwhile")

    # The reflector's done and ~/enable false stop the commands; the stand-in holds the arm still.
    for phase, reason in [("reflection_done", "episode terminated: the reflector judged it done"),
                          ("disabled", "disabled")]:
        got = result[phase]
        assert got["before"] > 0 and got["during"] == 0, (phase, got)
        assert got["status_reason"].startswith(reason) and got["resumed_after_s"] < 5.0, (phase, got)
    # The end effector holds (the stand-in's OSC servoes the pose; the redundant elbow may drift).
    held = np.array([model.fk(q)[0] for q in result["disabled"]["held_joints"]])
    drift = float(np.linalg.norm(held - held[0], axis=1).max())
    assert len(held) > 5 and drift < 0.002, drift
    report(f"policy_node disabled: the end effector moved {drift * 1e3:.2f} mm from 0.6 s to 1.5 s after "
           "~/enable false")

    # SIGINT: commands until the signal, none after; the last status says so.
    arrivals = np.array(result["sigint"]["arrivals"])
    assert np.sum(arrivals < sigint_at) > 0
    assert not np.any(arrivals > sigint_at + 0.3), arrivals[arrivals > sigint_at] - sigint_at
    assert result["sigint"]["last_status"]["reason"] == "shut down"
    rates = [line.split("]: ")[-1] for line in policy_log.splitlines() if "achieved rates" in line]
    report("policy_node: " + "; ".join(rates[-3:]))
