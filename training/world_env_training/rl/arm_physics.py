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
finger joint positions and velocities, the gripper controller's ramp, and the solver's warm
start), written into the scene before its chunk and read back after. An episode's chunk is
then a function of its own state and actions alone, so ``workers`` > 1 can share a batch's
episodes among that many scenes, one per process (this one and ``workers - 1`` spawned), with
results identical to one scene's: the controller and MuJoCo run in Python and C on one core, at
about 11 ms per step of one episode on a 2-core EPYC, while the world model waits for them.

``objects=True`` is an oracle, not a method: the objects stay collidable, and each episode's
whole scene (every object's pose and velocity too) starts from its LIBERO init state and evolves
under MuJoCo. The imagined robot state is then LIBERO's, contact included; what is still imagined
is every frame and the reward. It measures what LOOP in imagination could gain with a state model
that knew contact (post-train ``--arm scene``); a real robot has no such simulator of its scene.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback

import numpy as np


def resolve_workers(workers: int) -> int:
    """A ``physics_workers`` option's scene count: 0 means one per CPU core, at most 8."""
    return workers or min(len(os.sched_getaffinity(0)), 8)


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


class _Scene:
    """One process's MuJoCo scene of the task; ``advance`` steps episodes through it."""

    def __init__(self, suite: str, task_id: int, seed: int, objects: bool):
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
        # away through the floor; with them, each episode's scene is its own ("scene_qpos").
        self.base_qpos, self.base_qvel = self.sim.data.qpos.copy(), self.sim.data.qvel.copy()

    def advance(self, episodes: dict, actions: np.ndarray) -> tuple[np.ndarray, dict]:
        """Execute (b, k, 7) actions from the b episodes' states (fields q, dq, fingers, dfingers,
        ramp and warm, plus scene_qpos and scene_qvel with objects; ``ArmPhysics.reset`` makes
        them); returns the states after each action (b, k, 7) and the episodes' new states.
        Nothing of one episode reaches the next one's."""
        data, gripper = self.sim.data, self.robot_sim.gripper
        episodes = {name: np.array(value, copy=True) for name, value in episodes.items()}
        states = np.zeros(actions.shape[:2] + (7,), np.float32)
        for b in range(len(actions)):
            if self.objects:
                data.qpos[:], data.qvel[:] = episodes["scene_qpos"][b], episodes["scene_qvel"][b]
            else:
                data.qpos[:], data.qvel[:] = self.base_qpos, self.base_qvel
            data.qpos[self.arm_q], data.qvel[self.arm_v] = episodes["q"][b], episodes["dq"][b]
            data.qpos[self.finger_q], data.qvel[self.finger_v] = episodes["fingers"][b], episodes["dfingers"][b]
            data.qacc_warmstart[:] = episodes["warm"][b]
            gripper.current_action = episodes["ramp"][b].copy()
            # The controller caches the end-effector pose it last read; it must read this episode's.
            self.robot_sim.controller.new_update = True
            for t, action in enumerate(actions[b]):
                for i in range(self.substeps):  # robosuite's step, without its observables
                    self.sim.forward()
                    self._pre_action(action, i == 0)
                    self.sim.step()
                states[b, t] = self.robot.state_from_joints(data.qpos[self.arm_q], data.qpos[self.finger_q])
            episodes["q"][b], episodes["dq"][b] = data.qpos[self.arm_q], data.qvel[self.arm_v]
            episodes["fingers"][b], episodes["dfingers"][b] = data.qpos[self.finger_q], data.qvel[self.finger_v]
            episodes["warm"][b] = data.qacc_warmstart
            episodes["ramp"][b] = gripper.current_action
            if self.objects:
                episodes["scene_qpos"][b], episodes["scene_qvel"][b] = data.qpos, data.qvel
        return states, episodes


def _serve(connection, suite: str, task_id: int, seed: int, objects: bool) -> None:
    """A spawned process's loop: one ``_Scene``, ``advance`` calls until None."""
    scene = None
    try:
        scene = _Scene(suite, task_id, seed, objects)
        connection.send(("ready", None))
        while (request := connection.recv()) is not None:
            try:
                connection.send(("done", scene.advance(*request)))
            except Exception:
                connection.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):  # the parent is gone
        return
    except Exception:
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()
        if scene is not None:
            scene.env.close()


class ArmPhysics:
    """B episodes' arms stepped in LIBERO scenes of (suite, task_id) without object contacts.

    Args:
        suite, task_id: the LIBERO task whose robot, mount and table the episodes share.
        seed: LIBERO's seed (fixture placements), as ``LiberoEnv``.
        objects: keep the movable objects, each episode's from its init state (the oracle of
            the module docstring); ``reset`` then needs the episodes' init state ids.
        workers: scenes that step a batch's episodes in parallel, this process's and
            ``workers - 1`` spawned ones (module docstring); the results do not depend on it.
    """

    def __init__(self, suite: str, task_id: int, seed: int = 0, objects: bool = False, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers={workers}: expected at least 1 (this process's scene)")
        context = multiprocessing.get_context("spawn")  # LIBERO's GL and MuJoCo state do not fork
        self._peers = []
        for _ in range(workers - 1):  # started first, so that they build their scenes alongside this one
            mine, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, suite, task_id, seed, objects), daemon=True)
            process.start()
            theirs.close()
            self._peers.append((process, mine))
        self.scene = _Scene(suite, task_id, seed, objects)
        self.env, self.sim, self.robot, self.objects = self.scene.env, self.scene.sim, self.scene.robot, objects
        for process, connection in self._peers:
            self._receive(process, connection)
        self.episodes: dict | None = None

    @classmethod
    def for_start_states(cls, starts, source: str, seed: int = 0, objects: bool = False,
                         workers: int = 1) -> "ArmPhysics":
        """The scene of the (one) LIBERO task the start states (``StartState``) come from."""
        tasks = {(s.suite, s.task_id) for s in starts}
        if len(tasks) != 1:
            raise ValueError(f"arm physics steps one LIBERO task's scene, but the start states in {source} come from "
                             f"{sorted(tasks)}; use arm gains, or start states of one task")
        suite, task_id = tasks.pop()
        return cls(suite, task_id, seed, objects, workers)

    @property
    def workers(self) -> int:
        return 1 + len(self._peers)

    @property
    def batch_size(self) -> int:
        return 0 if self.episodes is None else len(self.episodes["q"])

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
        # robosuite's gripper command ramps towards (+1, -1) (open) or (-1, +1) (closed) per
        # finger; a gripper more than half open is taken to be commanded open.
        is_open = widths0 > self.robot.gripper_open_width / 2
        episodes = {"q": joints0.copy(), "dq": np.zeros((b, 7)), "fingers": np.stack([widths0 / 2, -widths0 / 2], 1),
                    "dfingers": np.zeros((b, 2)), "ramp": np.where(is_open[:, None], [1.0, -1.0], [-1.0, 1.0]),
                    "warm": np.zeros((b, self.sim.model.nv))}
        if self.objects:
            if init_state_ids is None or len(init_state_ids) != b or min(init_state_ids) < 0:
                raise ValueError(f"init_state_ids {init_state_ids}: arm physics with objects starts each of the {b} "
                                 "episodes' scenes from its LIBERO init state")
            scenes = {}
            for i in sorted(set(int(i) for i in init_state_ids)):
                self.env.reset(i)
                scenes[i] = self.sim.data.qpos.copy(), self.sim.data.qvel.copy()
            episodes["scene_qpos"] = np.stack([scenes[int(i)][0] for i in init_state_ids])
            episodes["scene_qvel"] = np.stack([scenes[int(i)][1] for i in init_state_ids])
        self.episodes = episodes

    def keep(self, indices) -> None:
        """Go on with only the episodes ``indices`` (as ``ImaginedEnv.keep``)."""
        self.episodes = {name: value[indices] for name, value in self.episodes.items()}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Execute (B, k, 7) LIBERO actions; returns the states after each, (B, k, 7), and the
        arms' joint angles after the last, (B, 7)."""
        if self.episodes is None:
            raise RuntimeError("ArmPhysics.step before reset")
        actions = np.asarray(actions, np.float64)
        if actions.ndim != 3 or actions.shape[0] != self.batch_size or actions.shape[2] != 7:
            raise ValueError(f"actions: shape {actions.shape}, expected ({self.batch_size}, k, 7)")
        if self.batch_size == 0:
            return np.zeros(actions.shape[:2] + (7,), np.float32), np.zeros((0, 7), np.float32)
        parts = [p for p in np.array_split(np.arange(self.batch_size), self.workers) if len(p)]
        sent = list(zip(self._peers, parts[1:]))
        for (_, connection), part in sent:
            connection.send(({name: value[part] for name, value in self.episodes.items()}, actions[part]))
        results = [self.scene.advance({name: value[parts[0]] for name, value in self.episodes.items()},
                                      actions[parts[0]])]
        results += [self._receive(process, connection) for (process, connection), _ in sent]
        states = np.concatenate([r[0] for r in results])
        self.episodes = {name: np.concatenate([r[1][name] for r in results]) for name in self.episodes}
        return states, self.episodes["q"].astype(np.float32)

    @staticmethod
    def _receive(process, connection):
        try:
            status, value = connection.recv()
        except EOFError:
            raise RuntimeError(f"arm physics worker {process.pid} died (exit code {process.exitcode})") from None
        if status == "error":
            raise RuntimeError(f"arm physics worker {process.pid} failed:\n{value}")
        return value

    def close(self) -> None:
        for process, connection in self._peers:
            try:
                connection.send(None)
            except OSError:
                pass
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self._peers = []
        self.env.close()
