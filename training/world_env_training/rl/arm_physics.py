"""The imagined arm moved by the robot's own physics instead of fitted tracking gains.

A world model that is told where the arm is (its state tokens and the arm action map) draws the
scene around it; where the arm actually goes under an action is the robot's controller and
dynamics, which are known. ``ArmPhysics`` steps them: LIBERO's MuJoCo scene of a task, with the
robot, its mount, the table and the fixed fixtures as they are, every movable object's geoms made
non-colliding (what objects do is the world model's to imagine), driven by LIBERO's own OSC
controller at its control rate. In free space the imagined end effector is then where LIBERO's
would be (0.0 cm after 4 chunks on held-out states, against 1.2-1.9 cm with the gains; README,
"Grounding imagination").

What the physics cannot know is contact with those objects: the imagined arm passes through an
object LIBERO's arm is stopped by, and its fingers close to ~1 mm where LIBERO's stop at the width
of a grasped object (README, "Grounding imagination", measures what that costs).

One MuJoCo scene serves all episodes of a batch: each episode keeps its own robot state (arm and
finger joint positions and velocities, the gripper controller's ramp), written into the scene
before its chunk and read back after.

``objects=True`` is an oracle, not a method: the objects stay collidable, and each episode's
whole scene (every object's pose and velocity too) starts from its LIBERO init state and evolves
under MuJoCo. The imagined robot state is then LIBERO's, contact included; what is still imagined
is every frame and the reward. It measures what LOOP in imagination could gain with a state model
that knew contact (post-train ``--arm scene``); a real robot has no such simulator of its scene.
"""

from __future__ import annotations

import numpy as np


def movable_object_geoms(model) -> np.ndarray:
    """Indices of the geoms on bodies that hang below a free joint (LIBERO's movable objects)."""
    free = set(np.flatnonzero(np.asarray(model.jnt_type) == 0).tolist())
    geoms = []
    for g in range(model.ngeom):
        body = int(model.geom_bodyid[g])
        while body > 0:
            start, count = int(model.body_jntadr[body]), int(model.body_jntnum[body])
            if any(j in free for j in range(start, start + count)):
                geoms.append(g)
                break
            body = int(model.body_parentid[body])
    return np.asarray(geoms, dtype=np.int64)


class ArmPhysics:
    """B episodes' arms stepped in one LIBERO scene of (suite, task_id) without object contacts.

    Args:
        suite, task_id: the LIBERO task whose robot, mount and table the episodes share.
        seed: LIBERO's seed (fixture placements), as ``LiberoEnv``.
        objects: keep the movable objects, each episode's from its init state (the oracle of
            the module docstring); ``reset`` then needs the episodes' init state ids.
    """

    def __init__(self, suite: str, task_id: int, seed: int = 0, objects: bool = False):
        from world_env_libero.env import LiberoEnv

        self.env = LiberoEnv(suite, task_id, resolution=8, seed=seed)
        self.env.reset(0, settle_steps=0)
        raw = self.env.raw.env  # robosuite's environment under LIBERO's wrapper
        self.sim, self.robot_sim = raw.sim, raw.robots[0]
        self.substeps = int(round(raw.control_timestep / raw.model_timestep))
        model = self.sim.model
        self.objects = objects
        if not objects:
            off = movable_object_geoms(model)
            model.geom_contype[off] = 0
            model.geom_conaffinity[off] = 0
        self._pre_action = raw._pre_action
        self.robot = self.env.robot
        self.arm_q, self.finger_q = self.robot.mujoco_qpos_indices(model)
        self.arm_v, self.finger_v = self.robot.mujoco_dof_indices(model)
        # Without objects' contacts, objects are restored to this each chunk, so they never fall
        # away through the floor; with them, each episode's scene is its own (``scene_qpos``).
        self.base_qpos, self.base_qvel = self.sim.data.qpos.copy(), self.sim.data.qvel.copy()
        self.q = self.dq = self.fingers = self.dfingers = self.ramp = None
        self.scene_qpos = self.scene_qvel = None  # objects: (B, nq), (B, nv)

    @classmethod
    def for_start_states(cls, starts, source: str, seed: int = 0, objects: bool = False) -> "ArmPhysics":
        """The scene of the (one) LIBERO task the start states (``StartState``) come from."""
        tasks = {(s.suite, s.task_id) for s in starts}
        if len(tasks) != 1:
            raise ValueError(f"arm physics steps one LIBERO task's scene, but the start states in {source} come from "
                             f"{sorted(tasks)}; use arm gains, or start states of one task")
        suite, task_id = tasks.pop()
        return cls(suite, task_id, seed, objects)

    @property
    def batch_size(self) -> int:
        return 0 if self.q is None else len(self.q)

    def reset(self, joints0: np.ndarray, widths0: np.ndarray, init_state_ids=None) -> None:
        """Start B arms at rest: joints0 (B, 7) rad, widths0 (B,) finger opening (m);
        init_state_ids (B,): the LIBERO init states the episodes began from (needed with objects,
        whose scenes start as LIBERO's after its 10 settling steps, as recorded episodes do).

        Episodes recorded after LIBERO's standard 10 settling steps begin with the arm still
        moving slightly (up to 0.05 rad/s, not recorded); starting those at rest leaves about
        4 mm of end-effector offset after one chunk, which delta actions then carry along."""
        joints0 = np.asarray(joints0, np.float64)
        widths0 = np.asarray(widths0, np.float64)
        if joints0.ndim != 2 or joints0.shape[1] != 7 or widths0.shape != (len(joints0),):
            raise ValueError(f"joints0 {joints0.shape} / widths0 {widths0.shape}: expected (B, 7) and (B,)")
        b = len(joints0)
        self.q, self.dq = joints0.copy(), np.zeros((b, 7))
        self.fingers = np.stack([widths0 / 2, -widths0 / 2], 1)
        self.dfingers = np.zeros((b, 2))
        # robosuite's gripper command ramps towards (+1, -1) (open) or (-1, +1) (closed) per
        # finger; a gripper more than half open is taken to be commanded open.
        is_open = widths0 > self.robot.gripper_open_width / 2
        self.ramp = np.where(is_open[:, None], [1.0, -1.0], [-1.0, 1.0])
        if self.objects:
            if init_state_ids is None or len(init_state_ids) != b or min(init_state_ids) < 0:
                raise ValueError(f"init_state_ids {init_state_ids}: arm physics with objects starts each of the {b} "
                                 "episodes' scenes from its LIBERO init state")
            scenes = {}
            for i in sorted(set(int(i) for i in init_state_ids)):
                self.env.reset(i)
                scenes[i] = self.sim.data.qpos.copy(), self.sim.data.qvel.copy()
            self.scene_qpos = np.stack([scenes[int(i)][0] for i in init_state_ids])
            self.scene_qvel = np.stack([scenes[int(i)][1] for i in init_state_ids])

    def keep(self, indices) -> None:
        """Go on with only the episodes ``indices`` (as ``ImaginedEnv.keep``)."""
        for name in ("q", "dq", "fingers", "dfingers", "ramp") + (("scene_qpos", "scene_qvel") if self.objects else ()):
            setattr(self, name, getattr(self, name)[indices])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Execute (B, k, 7) LIBERO actions; returns the states after each, (B, k, 7), and the
        arms' joint angles after the last, (B, 7)."""
        if self.q is None:
            raise RuntimeError("ArmPhysics.step before reset")
        actions = np.asarray(actions, np.float64)
        if actions.ndim != 3 or actions.shape[0] != self.batch_size or actions.shape[2] != 7:
            raise ValueError(f"actions: shape {actions.shape}, expected ({self.batch_size}, k, 7)")
        data, gripper = self.sim.data, self.robot_sim.gripper
        states = np.zeros(actions.shape[:2] + (7,), np.float32)
        for b in range(self.batch_size):
            if self.objects:
                data.qpos[:], data.qvel[:] = self.scene_qpos[b], self.scene_qvel[b]
            else:
                data.qpos[:], data.qvel[:] = self.base_qpos, self.base_qvel
            data.qpos[self.arm_q], data.qvel[self.arm_v] = self.q[b], self.dq[b]
            data.qpos[self.finger_q], data.qvel[self.finger_v] = self.fingers[b], self.dfingers[b]
            gripper.current_action = self.ramp[b].copy()
            # The controller caches the end-effector pose it last read; it must read this episode's.
            self.robot_sim.controller.new_update = True
            for t, action in enumerate(actions[b]):
                for i in range(self.substeps):  # robosuite's step, without its observables
                    self.sim.forward()
                    self._pre_action(action, i == 0)
                    self.sim.step()
                states[b, t] = self.robot.state_from_joints(data.qpos[self.arm_q], data.qpos[self.finger_q])
            self.q[b], self.dq[b] = data.qpos[self.arm_q], data.qvel[self.arm_v]
            self.fingers[b], self.dfingers[b] = data.qpos[self.finger_q], data.qvel[self.finger_v]
            self.ramp[b] = gripper.current_action
            if self.objects:
                self.scene_qpos[b], self.scene_qvel[b] = data.qpos, data.qvel
        return states, self.q.astype(np.float32)

    def close(self) -> None:
        self.env.close()
