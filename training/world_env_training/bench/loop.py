"""Post-training throughput through the ROS graph versus the in-process batched path.

One run, the same models (tiny random ones by default, ``world_env_training.tiny``; the cost of
the plumbing does not depend on the weights), the same episode length:

- in-process: ``loop.collect_rollouts`` of N episodes from one initial state, batched (B = N)
  and one at a time (B = 1);
- graph: the imagined launch graph (world_simulator_node, policy_node, reflector_node,
  loop_trainer_node started as processes with the launch file's parameters, DDS on loopback),
  timed from the trainer's first finished episode to its (1 + N)-th.

Figures: episodes/s of each, and the ratios graph / in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["bench_loop", "format_report"]


def _in_process(paths: dict, episodes: int, batch: int, max_steps: int, seed: int) -> float:
    """Episodes/s of ``episodes`` rollouts from one initial state, ``batch`` at a time."""
    from world_env_common.camera import CameraModel
    from world_env_training.rl.imagined_env import ImaginedEnv
    from world_env_training.rl.loop import collect_rollouts
    from world_env_training.rl.loop_runner import load_start_states
    from world_env_training.models.reflector import Reflector
    from world_env_common.robot import PandaModel
    from world_env_training.models.vla import VLAPolicy
    from world_env_training.models.world_model import WorldModel

    policy, reflector = VLAPolicy.from_pretrained(paths["policy"]), Reflector.from_pretrained(paths["reflector"])
    world_model, robot = WorldModel.from_pretrained(paths["world_model"]), PandaModel()
    start = load_start_states(paths["demos"])[:1]

    def make_env(camera):
        return ImaginedEnv(world_model, robot, CameraModel.from_dict(camera), seed=seed)

    generator = torch.Generator().manual_seed(seed)
    collect_rollouts(policy, reflector, make_env, start, batch, policy.config.chunk_size, generator)  # warm-up
    t0 = time.perf_counter()
    for _ in range(episodes // batch):
        collect_rollouts(policy, reflector, make_env, start, batch, max_steps, generator)
    return (episodes // batch) * batch / (time.perf_counter() - t0)


def _graph(paths: dict, episodes: int, max_steps: int, root: Path, timeout: float) -> float:
    import rclpy
    import yaml
    from std_msgs.msg import String

    from world_env_bringup.graph import graph, share_dir
    from world_env_common.ros import qos

    params = yaml.safe_load((share_dir() / "params" / "imagined.yaml").read_text())
    params["loop_trainer"]["ros__parameters"].update(rollouts_per_state=episodes + 1, batch_size=1, updates=1,
                                                     max_steps=max_steps, episode_timeout_s=timeout)
    (root / "imagined.yaml").write_text(yaml.safe_dump(params))
    nodes = graph(mode="imagined", policy=paths["policy"], reflector=paths["reflector"],
                  world_model=paths["world_model"], start_dataset=paths["demos"],
                  params_file=str(root / "imagined.yaml"), loop_output_dir=str(root / "loop_ros"))
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(100 + os.getpid() % 100), ROS_LOG_DIR=str(root / "ros_log"))
    procs = [subprocess.Popen(n.command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for n in nodes]
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    rclpy.init()
    node = rclpy.create_node("bench_loop")
    marks: dict[int, float] = {}
    node.create_subscription(String, "/loop_trainer/status",
                             lambda m: marks.setdefault(json.loads(m.data)["episodes"], time.perf_counter()),
                             qos.LATCHED)
    try:
        end = time.monotonic() + timeout
        while 1 + episodes not in marks and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a graph node exited early")
        if 1 + episodes not in marks:
            raise RuntimeError(f"the graph ran {max(marks, default=0)} episodes in {timeout:.0f} s")
        return episodes / (marks[1 + episodes] - marks[1])
    finally:
        node.destroy_node()
        rclpy.shutdown()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def bench_loop(episodes: int = 4, max_steps: int = 16, seed: int = 0, timeout: float = 300.0) -> dict:
    from world_env_training.tiny import write_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_artifacts(root / "artifacts", threshold=0.99)  # episodes run to max_steps
        batched = _in_process(paths, episodes, episodes, max_steps, seed)
        single = _in_process(paths, episodes, 1, max_steps, seed)
        through_graph = _graph(paths, episodes, max_steps, root, timeout)
    return {"episodes": episodes, "max_steps": max_steps, "models": "tiny random (16x16 world model)",
            "in_process_batched_eps": batched, "in_process_single_eps": single, "graph_eps": through_graph,
            "graph_vs_batched": through_graph / batched, "graph_vs_single": through_graph / single,
            "cpus": len(os.sched_getaffinity(0)), "load_1min": os.getloadavg()[0]}


def format_report(r: dict) -> str:
    return (f"LOOP episodes/s ({r['episodes']} episodes of {r['max_steps']} steps, {r['models']}): in-process "
            f"batched {r['in_process_batched_eps']:.2f}, in-process one at a time {r['in_process_single_eps']:.2f}, "
            f"through the ROS graph {r['graph_eps']:.3f} (graph / batched {r['graph_vs_batched']:.3f}, graph / one at "
            f"a time {r['graph_vs_single']:.3f}); {r['cpus']} CPUs, load {r['load_1min']:.1f}")


if __name__ == "__main__":
    print(format_report(bench_loop()))
