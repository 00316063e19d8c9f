"""reflector_node over real DDS on loopback, with a tiny random reflector: frames in (bgr8, rgb8,
two sizes) -> one Reflection per frame with its header; bad frames dropped with the reason logged
once; ~/reset and a new instruction start new episodes; configuration errors exit 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rosutil import kill, node_executable, ros_env, stop

PROBE = Path(__file__).parent / "probes" / "reflector_probe.py"


def tiny_reflector(path: Path) -> str:
    """A random tiny reflector model folder (builds and loads in well under a second)."""
    import torch

    from world_env_training.models.reflector import Reflector, ReflectorConfig

    torch.manual_seed(0)
    Reflector(ReflectorConfig.tiny()).save_pretrained(path)
    return str(path)


def start_reflector_node(env, *ros_args):
    cmd = [str(node_executable("world_env_reflector", "reflector_node")), "--ros-args", *ros_args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.ros
def test_reflector_node_judges_frames_and_drops_bad_ones(tmp_path, report):
    env = ros_env(tmp_path)
    checkpoint = tiny_reflector(tmp_path / "reflector")
    node = start_reflector_node(env, "-p", f"checkpoint:={checkpoint}", "-p", "threshold:=0.9")
    try:
        probe = subprocess.run([sys.executable, str(PROBE), str(tmp_path), "45"],
                               env=env, capture_output=True, text=True, timeout=55)
        alive = node.poll() is None
        _, log = stop(node)
    finally:
        kill(node)
    diag = f"probe rc={probe.returncode}\n{probe.stderr[-3000:]}\nnode:\n{log[-5000:]}"
    assert probe.returncode == 0, diag
    assert alive, "reflector_node died\n" + diag
    assert node.returncode == 0 and "Traceback" not in log, diag
    result = json.loads((tmp_path / "result.json").read_text())

    assert not result["reset_without_instruction"]["success"]
    assert log.count("frames dropped: no instruction yet") == 1, diag

    # Each good frame: its own stamp and frame_id back, the next step, R in [0, 1].
    good = result["good"]
    episode = good[0]["episode_id"]
    assert episode and all(g["episode_id"] == episode for g in good)
    assert [g["step"] for g in good] == list(range(len(good)))
    latched = False
    for g in good + [result["after_bad"]]:
        assert g["stamp"] == g["sent_stamp"] and g["frame_id"] == g["sent_frame_id"], g
        assert 0.0 <= g["reward"] <= 1.0 and g["threshold"] == pytest.approx(0.9)
        latched = latched or g["reward"] > 0.9
        assert g["done"] == latched, g  # done stays on for the episode once it fires
    assert {g["frame_id"] for g in good} >= {"cam_bgr8_64x48", "cam_rgb8_96x72", "cam_bgr8_96x72", "cam_rgb8_64x48"}

    # Bad frames: no Reflection, each reason logged once, the episode goes on.
    assert result["bad_answered"] == 0
    assert result["after_bad"]["step"] == len(good) and result["after_bad"]["episode_id"] == episode
    for reason in ["frame dropped: bad camera input: unsupported encoding '32FC1'",
                   "frame dropped: bad camera input: data has 1000 bytes, expected step 192 x height 48 = 9216",
                   "frame dropped: bad camera input: step 100 is smaller than width 64 x 3 channels"]:
        assert log.count(reason) == 1, (reason, diag)

    # ~/reset and a new instruction: new episode ids, steps from 0.
    assert result["reset"]["success"], result["reset"]
    first, second = result["after_reset"]
    assert first["episode_id"] != episode and second["episode_id"] == first["episode_id"]
    assert result["reset"]["message"] == f"new episode {first['episode_id']}"
    assert [first["step"], second["step"]] == [0, 1]
    new = result["after_instruction"]
    assert new["step"] == 0 and new["episode_id"] not in (episode, first["episode_id"])
    assert "instruction: 'open the drawer': new episode" in log

    # Latency: the node's scoring time (its shutdown line) and the probe's round trip.
    match = re.search(r"shut down: scored (\d+) frames, ([\d.]+) ms per frame \(mean\)", log)
    assert match, diag
    frames, score_ms = int(match.group(1)), float(match.group(2))
    assert frames == len(good) + 1 + 2 + 1 + 20
    trips = sorted(result["latency"])
    report(f"reflector_node (tiny reflector, 1 torch thread): {score_ms:.1f} ms scoring per frame in the node "
           f"(mean of {frames}); probe round trip frame -> Reflection median {trips[len(trips) // 2]:.1f} ms, "
           f"max {trips[-1]:.1f} ms")


@pytest.mark.ros
def test_reflector_node_config_errors_exit_2(tmp_path):
    env = ros_env(tmp_path)
    checkpoint = tiny_reflector(tmp_path / "reflector")
    for args, expected in [([], "parameter checkpoint: no checkpoint given"),
                           (["-p", f"checkpoint:={tmp_path / 'none'}"], "does not exist"),
                           (["-p", f"checkpoint:={tmp_path}"], "neither a reflector model"),
                           (["-p", f"checkpoint:={checkpoint}", "-p", "threshold:=1.5"],
                            "threshold must be in (0, 1)"),
                           (["-p", f"checkpoint:={checkpoint}", "-p", "torch_threads:=-1"],
                            "torch_threads must be an integer")]:
        proc = start_reflector_node(env, *args)
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            kill(proc)
        assert proc.returncode == 2, (args, err)
        assert expected in err and "Traceback" not in err, err
