"""The world simulator as an arm and a camera: the ROS-free core of ``world_simulator_node``.

It takes what a real arm takes (joint trajectories, as a ros2_control
joint_trajectory_controller) and gives what real drivers give (joint positions, camera frames),
with the world model in place of physics and rendering:

- ``reset(frame, arm_q, fingers, instruction, now)``: an episode starts from a real frame o_0 and
  the arm's joint state s_0 (resized to the model's resolution if needed).
- ``set_arm_trajectory`` / ``set_gripper_trajectory``: commands, sampled by time with the
  controller's semantics (``world_env_common.trajectory``).
- ``step(now)``: one control step. The arm target at ``now`` (joint limits clamped) gives the
  commanded state c = [FK position, axis-angle, gripper width] in the rig's world frame; the
  world model predicts the next frame from the memory bank and the action map of c (with an
  arm action map, the arm drawn at the commanded joints; ``ImaginedEnv.step_commanded``); the
  arm is taken to reach its target within the step (a joint trajectory's set-point moves little
  per control period) and the gripper width moves towards its target at LIBERO's rate.

Joint positions are all it reports: the world model predicts pixels, not contacts, so a
grasped object cannot stop the fingers here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from world_env_common.robot import DEFAULT_FINGER_JOINT_NAMES, DEFAULT_JOINT_NAMES, PandaModel
from world_env_common.trajectory import CommandFollower, TrajectoryError

__all__ = ["TrajectoryError", "WorldSimulator"]


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 (area-averaged when shrinking)."""
    if frame.shape[:2] == (size, size):
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BOX if frame.shape[0] > size
                                                    else Image.BILINEAR))


class WorldSimulator:
    """One imagined episode driven like a real arm (module docstring).

    Args:
        world_model: a trained ``WorldModel``.
        camera: ``CameraModel`` of the rig (any resolution: scaled to the model's).
        robot: ``PandaModel`` placed at the rig's base pose (FK gives world-frame poses).
        joint_names, finger_joint_names: names used in commands and joint states.
        device, sampler_steps, seed, precision: as ``ImaginedEnv``'s.
    """

    def __init__(self, world_model, camera, robot: PandaModel, joint_names: Sequence[str] = DEFAULT_JOINT_NAMES,
                 finger_joint_names: Sequence[str] = DEFAULT_FINGER_JOINT_NAMES, device: str = "cpu",
                 sampler_steps: int | None = None, seed: int = 0, precision: str = "fp32"):
        from world_env_training.rl.imagined_env import ImaginedEnv

        size = world_model.config.resolution
        self.size = size
        self.robot = robot
        self.joint_names, self.finger_joint_names = list(joint_names), list(finger_joint_names)
        if len(self.joint_names) != 7 or len(self.finger_joint_names) != 2:
            raise ValueError(f"need 7 arm joint names and 2 finger joint names, got {self.joint_names} "
                             f"and {self.finger_joint_names}")
        if world_model.config.frame_stride != 1:
            raise ValueError(f"the world model predicts one frame per chunk of {world_model.config.frame_stride} "
                             "actions (frame_stride); the simulator steps per control period and needs frame_stride 1")
        self.camera = camera if (camera.height, camera.width) == (size, size) else camera.resized(size, size)
        self.env = ImaginedEnv(world_model, robot, self.camera, device, sampler_steps=sampler_steps, seed=seed,
                               precision=precision)
        self.commands = CommandFollower(robot, self.joint_names, self.finger_joint_names)
        self.q: np.ndarray | None = None
        self.instruction = ""
        self.steps = 0

    @property
    def started(self) -> bool:
        return self.q is not None

    @property
    def width(self) -> float:
        return float(self.env.states[0, 6])

    @property
    def finger_positions(self) -> np.ndarray:
        return np.array([0.5 * self.width, -0.5 * self.width])

    @property
    def frame(self) -> np.ndarray:
        return self.env.memory.frames[-1][0]

    def reset(self, frame: np.ndarray, arm_q: Sequence[float], fingers: Sequence[float], instruction: str) -> None:
        """Start an episode from a real (H, W, 3) uint8 RGB frame and the arm's joint state."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame: {frame.dtype} {frame.shape}, expected uint8 (H, W, 3)")
        q = np.asarray(arm_q, dtype=float)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"arm joint positions: expected 7 finite values, got {q.tolist()}")
        fingers = np.asarray(fingers, dtype=float)
        if fingers.shape != (2,) or not np.all(np.isfinite(fingers)):
            raise ValueError(f"finger joint positions: expected 2 finite values, got {fingers.tolist()}")
        if not instruction.strip():
            raise ValueError("empty instruction")
        q = self.robot.clamp(q)
        state = self.robot.state_from_joints(q, fingers).astype(np.float32)
        self.env.reset(resize_frame(frame, self.size)[None], state[None], instruction, joints0=q[None])
        self.q, self.instruction, self.steps = q, instruction, 0
        self.commands.clear()

    def set_arm_trajectory(self, joint_names, points, start_time: float) -> list[str]:
        """Follow an arm trajectory (all 7 arm joints; finger joints in it command the gripper).
        Returns notes for the log; raises ``TrajectoryError`` naming the reason."""
        if not self.started:
            raise TrajectoryError("no episode yet (call the reset service first)")
        return self.commands.set_arm(joint_names, points, start_time, self.q, self.width)

    def set_gripper_trajectory(self, joint_names, points, start_time: float) -> list[str]:
        """Follow finger position targets (one or both finger joints) as an opening width."""
        if not self.started:
            raise TrajectoryError("no episode yet (call the reset service first)")
        return self.commands.set_gripper(joint_names, points, start_time, self.width)

    def step(self, now: float) -> dict:
        """One control step at time ``now``: returns {"frame" (S, S, 3) uint8, "action_map" (S, S, 3)
        uint8, "arm" (7,), "fingers" (2,), "state" (7,), "commanded" (7,)}."""
        if not self.started:
            raise RuntimeError("WorldSimulator.step before reset")
        q_target = self.commands.arm_target(now)
        q_target = self.q if q_target is None else q_target
        width_target = self.commands.width_target(now)
        width_target = self.width if width_target is None else width_target
        commanded = self.robot.state_from_joints(q_target, [0.5 * width_target, -0.5 * width_target])
        commanded = commanded.astype(np.float32)[None]
        obs = self.env.step_commanded(commanded, joints=np.asarray(q_target, np.float32)[None])
        self.q = q_target
        self.steps += 1
        return {"frame": obs["image"][0], "arm": self.q.copy(), "fingers": self.finger_positions,
                "state": obs["state"][0], "commanded": commanded[0],
                "action_map": self.env.action_maps[0]}
