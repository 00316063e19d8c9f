"""loop_trainer_node: LOOP post-training from the episodes that flow through the ROS graph.

Imagined mode: the world simulator stands in for camera and arm, the policy node samples chunks
(``sample:=true``) and the reflector scores frames. This node runs the episodes and learns from
them. The node is a thin adapter: ``world_env_policy.trainer`` holds the episode protocol without
ROS (``GraphLoopRunner``, ``EpisodeRecorder``; this node implements its ``TrainerGraph`` with
services and parameters) and ``world_env_training.rl.online_loop.OnlineLOOP`` the science:

1. For each update it draws ``batch_size`` initial states from ``start_dataset`` and runs
   ``rollouts_per_state`` episodes from each. An episode: disable the policy, reset the
   simulator with the initial frame and joint state (``ResetEpisode``), reset reflector and
   policy, enable the policy; record every ``~/chunk`` the policy publishes (observation,
   sampled actions, log-likelihood) and the reflector's rewards for frames stamped from the
   reset on; stop at the reflector's done, or once ``max_steps`` steps of chunks have run, or
   after ``episode_timeout_s`` of wall time (the episode is then run again).
2. With the groups complete: leave-one-out advantages, PPO, an atomic checkpoint in
   ``output_dir`` (``checkpoints/step_N``), then the policy node's ``checkpoint`` parameter is
   set to it and the node waits until the policy reports running it (hot swap).

Publishes ``~/status`` (String, JSON, latched): update, episodes run, last metrics. Parameters:
``policy`` (start weights; also what the policy node must be running at start), ``start_dataset``,
``output_dir``, and the LOOP settings of ``world-env post-train`` under the same names
(rollouts_per_state, batch_size, updates, max_steps, clip_eps, lr_lora, lr_heads, ppo_epochs,
minibatches, grad_clip, target_kl, binary_reward, keep_checkpoints, seed, device), plus
``episode_timeout_s``, ``joint_names`` and ``finger_joint_names`` (those of the simulated arm, as in
its reset requests) and the names of the nodes it drives (``policy_node``,
``simulator_node``, ``reflector_node``). A run restarted on the same ``output_dir`` resumes from
its newest checkpoint. Configuration errors stop the node at start with exit code 2.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from world_env_common.robot import DEFAULT_FINGER_JOINT_NAMES, DEFAULT_JOINT_NAMES
from world_env_common.ros import qos
from world_env_common.ros.images import image_to_rgb, rgb_to_image
from world_env_common.ros.node_main import spin_until_signal
from world_env_common.ros.trajectories import seconds
from world_env_interfaces.msg import ActionChunk, Reflection
from world_env_interfaces.srv import ResetEpisode
from world_env_policy.trainer import EpisodeRecorder, GraphLoopRunner


class ConfigError(ValueError):
    """A parameter value the node cannot start with."""


class LoopTrainerNode(Node):
    def __init__(self):
        super().__init__("loop_trainer")
        from world_env_training.configs import PostTrainConfig

        defaults = PostTrainConfig()
        values = {}
        for name in ("policy", "output_dir", "rollouts_per_state", "batch_size", "updates", "max_steps", "clip_eps",
                     "lr_lora", "lr_heads", "ppo_epochs", "minibatches", "grad_clip", "target_kl", "binary_reward",
                     "keep_checkpoints", "seed", "device"):
            default = getattr(defaults, name)
            try:
                values[name] = self.declare_parameter(
                    name, default, ParameterDescriptor(read_only=True, dynamic_typing=isinstance(default, float),
                                                       description=f"as world-env post-train --{name}")).value
            except InvalidParameterTypeException as err:
                raise ConfigError(f"parameter {name}: {err}") from err
        start_dataset = self.declare_parameter("start_dataset", "runs/default/demos").value
        self.timeout_s = float(self.declare_parameter("episode_timeout_s", 300.0).value)
        self.joint_names = list(self.declare_parameter("joint_names", list(DEFAULT_JOINT_NAMES)).value)
        self.finger_joint_names = list(self.declare_parameter("finger_joint_names",
                                                              list(DEFAULT_FINGER_JOINT_NAMES)).value)
        if len(self.joint_names) != 7 or len(self.finger_joint_names) != 2:
            raise ConfigError(f"joint_names needs 7 names and finger_joint_names 2, got {self.joint_names} and "
                              f"{self.finger_joint_names}")
        names = {k: self.declare_parameter(f"{k}_node", default).value
                 for k, default in (("policy", "policy"), ("simulator", "world_simulator"),
                                    ("reflector", "reflector"))}
        try:
            self.cfg = PostTrainConfig(demos=start_dataset, **values)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        from world_env_training.data.dataset import Dataset, DatasetError

        try:
            self.dataset = Dataset(start_dataset)
        except (FileNotFoundError, ValueError, DatasetError) as err:
            raise ConfigError(f"start_dataset {start_dataset}: {err}") from err
        if len(self.dataset) == 0:
            raise ConfigError(f"start_dataset {start_dataset}: no episodes")
        from world_env_training.rl.online_loop import OnlineLOOP

        try:
            self.core = OnlineLOOP(self.cfg)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"policy {self.cfg.policy}: {err}") from err

        self.policy_status: dict = {}
        self.stop_event = threading.Event()
        self.recorder = EpisodeRecorder()
        self.runner = GraphLoopRunner(self.core, self, self.recorder, len(self.dataset), self.timeout_s,
                                      self._log, self.stop_event)

        p, s, r = names["policy"], names["simulator"], names["reflector"]
        self.enable = self.create_client(SetBool, f"/{p}/enable")
        self.policy_reset = self.create_client(Trigger, f"/{p}/reset")
        self.set_params = self.create_client(SetParameters, f"/{p}/set_parameters")
        self.sim_reset = self.create_client(ResetEpisode, f"/{s}/reset")
        self.reflector_reset = self.create_client(Trigger, f"/{r}/reset")
        self.create_subscription(ActionChunk, f"/{p}/chunk", self._on_chunk, qos.COMMAND)
        self.create_subscription(String, f"/{p}/status", self._on_policy_status, qos.LATCHED)
        self.create_subscription(Reflection, "reflection", self._on_reflection, qos.COMMAND)
        self.status_pub = self.create_publisher(String, "~/status", qos.LATCHED)
        self.publish_status(self.runner.status())
        self.worker = threading.Thread(target=self.runner.run, name="loop-trainer", daemon=True)
        self.worker.start()
        self.get_logger().info(
            f"LOOP trainer ready: {self.cfg.batch_size} initial states x {self.cfg.rollouts_per_state} episodes per "
            f"update, {self.cfg.updates} updates (now at {self.core.update_count}), up to {self.cfg.max_steps} steps; "
            f"checkpoints in {self.cfg.output_dir}")

    # ------------------------------------------------------------------ callbacks (executor thread)
    def _on_chunk(self, msg: ActionChunk) -> None:
        actions = np.asarray(msg.actions, np.float32).reshape(msg.chunk_size, msg.action_dim)
        self.recorder.on_chunk(seconds(msg.header.stamp), msg.checkpoint, msg.instruction,
                               lambda: image_to_rgb(msg.image), msg.state, actions, msg.log_prob)

    def _on_reflection(self, msg: Reflection) -> None:
        self.recorder.on_reflection(seconds(msg.header.stamp), msg.reward, msg.done)

    def _on_policy_status(self, msg: String) -> None:
        try:
            self.policy_status = json.loads(msg.data)
        except json.JSONDecodeError:
            pass

    # ------------------------------------------------------------------ TrainerGraph (worker thread)
    def _log(self, level: str, text: str) -> None:
        getattr(self.get_logger(), level)(text)

    def _call(self, client, request, what: str, timeout: float = 60.0):
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"{what}: service {client.srv_name} not available")
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done():
            if self.stop_event.is_set():
                raise RuntimeError("shutting down")
            if time.monotonic() > end:
                raise RuntimeError(f"{what}: no answer within {timeout:.0f} s")
            time.sleep(0.01)
        return future.result()

    def enable_policy(self, enabled: bool) -> None:
        self._call(self.enable, SetBool.Request(data=enabled), ("enable" if enabled else "disable") + " the policy")

    def reset_simulator(self, index: int) -> tuple[float, str]:
        episode = self.dataset[index]
        width = float(episode.states[0, 6])
        joints = JointState(name=self.joint_names + self.finger_joint_names,
                            position=[*map(float, episode.joint_positions[0]), 0.5 * width, -0.5 * width])
        request = ResetEpisode.Request(instruction=episode.instruction, frame=rgb_to_image(episode.frames[0], "rgb8"),
                                       joint_state=joints)
        response = self._call(self.sim_reset, request, "reset the simulator")
        if not response.success:
            raise RuntimeError(f"the simulator refused the reset: {response.message}")
        return seconds(response.stamp), episode.instruction

    def reset_reflector(self) -> None:
        self._call(self.reflector_reset, Trigger.Request(), "reset the reflector")

    def reset_policy(self) -> None:
        self._call(self.policy_reset, Trigger.Request(), "reset the policy")

    def policy_checkpoint(self) -> str | None:
        end = time.monotonic() + 60  # the policy's latched status arrives once discovery completes
        while not self.policy_status and time.monotonic() < end and not self.stop_event.is_set():
            time.sleep(0.05)
        return self.policy_status.get("checkpoint")

    def hand_checkpoint(self, path: str) -> None:
        request = SetParameters.Request(parameters=[ParameterMsg(
            name="checkpoint", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=path))])
        result = self._call(self.set_params, request, "set the policy checkpoint").results[0]
        if not result.successful:
            raise RuntimeError(f"the policy node refused checkpoint {path}: {result.reason}")
        end = time.monotonic() + 300
        while self.policy_status.get("checkpoint") != path or self.policy_status.get("loading"):
            if time.monotonic() > end or self.stop_event.is_set():
                raise RuntimeError(f"the policy node did not swap to {path}")
            time.sleep(0.05)

    def publish_status(self, status: dict) -> None:
        self.status_pub.publish(String(data=json.dumps(status)))

    def stop(self) -> None:
        self.stop_event.set()


def main(args=None) -> int:
    return spin_until_signal(LoopTrainerNode, "loop_trainer_node", (ConfigError,), args,
                             on_shutdown=lambda node: node.stop())


if __name__ == "__main__":
    sys.exit(main())
