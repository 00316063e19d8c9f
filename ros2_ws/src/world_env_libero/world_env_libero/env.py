"""One LIBERO task as an environment: fixed initial states, upright images, the 7-D policy state.

The simulator is LIBERO's ``OffScreenRenderEnv`` (robosuite 1.4, OSC_POSE controller, 20 Hz
control), set up as the standard evaluation (OpenVLA-OFT's ``run_libero_eval.py``) sets it up:
``task_order_index=0``, ``env.seed(seed)``, ``env.reset()``, ``env.set_init_state(...)``, then
``settle_steps`` no-op actions before the policy acts, and a per-suite step budget.

Observation (a dict, the contract other code relies on):

- ``image``: (H, W, 3) uint8 RGB of camera ``agentview``, upright (row 0 = top).
- ``wrist_image``: (H, W, 3) uint8 RGB of ``robot0_eye_in_hand``, upright; only if ``wrist``.
- ``depth``: (H, W) float32 planar depth of ``agentview`` in metres; only if ``depth``.
- ``state``: (7,) float64 ``[x, y, z, rx, ry, rz, gripper width]`` (m, rad axis-angle, m), see
  ``world_env_common.robot``.
- ``joint_positions``: (7,) float64 arm joints (rad); ``finger_positions``: (2,) float64 (m).

Differences from LIBERO's own observation dict, both deliberate:

- Images are rendered here with ``sim.render`` at the end of each step, after an
  ``mj_forward`` (``use_camera_obs`` is off, so robosuite renders nothing itself). ``mj_step``
  leaves the body poses that sensors and the renderer read at the last substep's start, so
  LIBERO's observations show the scene one physics substep (2 ms of the 50 ms step) before
  ``qpos`` (under 1 mm of hand motion, ~1 grey level on average); ours show the same instant
  as ``state``. Only the requested cameras are rendered (~60 ms each with the CPU renderer,
  at any resolution up to 256).
- Every ``reset`` re-seeds (``seed``) before LIBERO's hard reset: the reset re-samples fixture
  placements (not part of the saved init states) from NumPy's global RNG, so without it the
  same init state gives different scenes. With it (seed 0), every episode's scene is the one
  the standard evaluation's first episode sees.
- Only the first reset is a hard one. A hard reset rebuilds the model and a new render context
  (1.5-3 s, most of a short episode's cost); with the same seed it rebuilds the same fixtures,
  so later resets keep the model and reset the rest (MuJoCo's data, LIBERO's soft reset, the
  gripper's action state, which only a rebuild clears). Episodes are bit-identical to those
  after a hard reset (``test_env.py``).

Init states: ids 0-49 are LIBERO's 50 saved states of the task. Ids from 50 on are drawn
states: after the seeded hard reset (the standard fixtures), LIBERO's own samplers place the
objects and robosuite's Gaussian joint noise (0.02 rad, the domain's default, which the saved
states show: their arm joints spread by 0.017-0.021 rad) perturbs the arm, both from NumPy's RNG
seeded by the suite, task and id. The same id gives the same scene on any machine; no saved
state is among them, so they are held out from anything trained on the saved ones. The episode
then starts like a saved state's: the standard reset, then the drawn state set into it.
"""

from __future__ import annotations

from pathlib import Path

import zlib

import mujoco
import numpy as np

from world_env_common.camera import CameraModel, depth_from_mujoco_zbuffer, upright
from world_env_common.rig import Rig
from world_env_common.robot import PandaModel

__all__ = ["LiberoEnv", "MAX_STEPS", "SETTLE_ACTION", "SUITES"]

#: Policy steps per episode in the standard evaluation (OpenVLA-OFT), settle steps not counted.
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}
SUITES = tuple(MAX_STEPS)
#: Upper end (exclusive) of the init state ids: a bound that only catches nonsense.
MAX_INIT_STATE_ID = 2**31
#: robosuite's default joint noise, which LIBERO's saved states were drawn with (rad).
ARM_INIT_NOISE = 0.02
#: The evaluation's no-op while objects settle: no motion, gripper open (-1).
SETTLE_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])

AGENT_CAMERA = "agentview"
WRIST_CAMERA = "robot0_eye_in_hand"


def load_triton_before_rendering() -> None:
    """Call before creating a LIBERO renderer (idempotent, ~0.1 s; a no-op without triton).

    Mesa's llvmpipe (CPU EGL rendering) and triton (shipped with the CUDA build of torch)
    each bring an LLVM. Once llvmpipe has initialised its copy, loading triton segfaults the
    process, and torchvision loads triton on import; the other order is fine.
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        pass


def validate_action(action) -> np.ndarray:
    """(7,) float64 copy of a LIBERO action; ValueError if not 7 finite numbers."""
    try:
        a = np.array(action, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"action must be 7 numbers, got {action!r} ({err})") from err
    if a.shape != (7,):
        raise ValueError(f"action must have shape (7,), got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ValueError(f"action has non-finite entries at indices {bad.tolist()}: {a.tolist()}")
    return a


class LiberoEnv:
    """One task of a LIBERO suite.

    Args:
        suite: one of ``SUITES`` (libero_spatial, libero_object, libero_goal, libero_10).
        task_id: task index in the suite (task order 0, as the benchmark reports results).
        resolution: square image size in pixels for every camera.
        wrist: also render the wrist camera (``wrist_image``).
        depth: also return the agent view's planar depth (``depth``).
        seed: seed applied before every reset (fixes the fixture placements, see module doc).
    """

    def __init__(self, suite: str, task_id: int, resolution: int = 64, wrist: bool = False,
                 depth: bool = False, seed: int = 0):
        if suite not in MAX_STEPS:
            raise ValueError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
        if int(resolution) < 1:
            raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
        load_triton_before_rendering()
        # Imported here: libero/robosuite are heavy and print on import.
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        bench = benchmark.get_benchmark(suite)(task_order_index=0)
        if not 0 <= task_id < bench.n_tasks:
            raise ValueError(f"task_id {task_id} out of range for {suite} ({bench.n_tasks} tasks)")
        task = bench.get_task(task_id)
        self.suite, self.task_id = suite, int(task_id)
        self.resolution, self.wrist, self.depth, self.seed = int(resolution), bool(wrist), bool(depth), int(seed)
        self.task_name: str = task.name
        self.instruction: str = task.language
        self.max_steps: int = MAX_STEPS[suite]
        #: LIBERO's own observation dict of the last reset/step (privileged object and eef
        #: poses, no images): what scripted experts read.
        self.raw_obs: dict = {}
        self._init_states = np.asarray(bench.get_task_init_states(task_id))

        cameras = [AGENT_CAMERA] + ([WRIST_CAMERA] if wrist else [])
        self.raw = OffScreenRenderEnv(
            bddl_file_name=str(Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file),
            camera_names=cameras, camera_heights=self.resolution, camera_widths=self.resolution,
            use_camera_obs=False,  # we render ourselves, after the step (module doc)
            # robosuite ends an episode after `horizon` (1000) steps and then refuses to step,
            # which would kill the long-running hardware stand-in. Step limits are ours to
            # enforce (max_steps); LIBERO's `done` is its success check either way.
            ignore_done=True,
        )
        sim = self.raw.sim
        sim.forward()
        # Robot base and agent camera are fixed in every LIBERO scene; fixtures are what moves.
        self.robot = PandaModel.from_mujoco(sim.model, sim.data)
        self.rig = Rig.from_mujoco(sim.model, sim.data, AGENT_CAMERA, self.resolution, self.resolution)
        self._arm_idx, self._finger_idx = self.robot.mujoco_qpos_indices(sim.model)
        self._scene_built = False  # the first reset is a hard one (module doc)

    # ------------------------------------------------------------------ properties
    @property
    def spec(self) -> dict:
        """The constructor arguments that build this env (``LiberoEnv(**env.spec)``)."""
        return {"suite": self.suite, "task_id": self.task_id, "resolution": self.resolution,
                "wrist": self.wrist, "depth": self.depth, "seed": self.seed}

    @property
    def camera(self) -> CameraModel:
        """Model of the agent-view camera at ``resolution`` (upright image convention)."""
        return self.rig.camera

    @property
    def num_init_states(self) -> int:
        """LIBERO's saved init states (ids below this); ids from it on are drawn (module doc)."""
        return len(self._init_states)

    # ------------------------------------------------------------------ episode
    def reset(self, init_state_id: int, settle_steps: int = 10) -> dict:
        """Start an episode from init state ``init_state_id``: LIBERO's saved state for ids
        below ``num_init_states``, a drawn state (module doc) from there on.

        settle_steps: ``SETTLE_ACTION`` steps run before the first observation, as the standard
        evaluation waits 10 steps for objects dropped into the scene to come to rest (these
        steps are not part of ``max_steps``). 0 gives the init state as saved.
        Side effect: seeds NumPy's global RNG with ``seed`` (LIBERO draws from it).
        """
        if not 0 <= init_state_id < MAX_INIT_STATE_ID:
            raise ValueError(f"init_state_id {init_state_id} out of range: 0-{self.num_init_states - 1} are "
                             f"LIBERO's saved states of {self.suite} task {self.task_id}, larger ids drawn ones")
        if settle_steps < 0:
            raise ValueError(f"settle_steps must be >= 0, got {settle_steps}")
        if init_state_id < self.num_init_states:
            state = self._init_states[init_state_id]
        else:
            state = self._drawn_state(init_state_id)
        self._reset_scene()
        self.raw_obs = self.raw.set_init_state(state)
        # A hard reset rebuilds the sim; addresses are the same, but read them from this one.
        self._arm_idx, self._finger_idx = self.robot.mujoco_qpos_indices(self.raw.sim.model)
        for _ in range(settle_steps):
            self.raw_obs, *_ = self.raw.step(SETTLE_ACTION)
        return self._observe()

    def _reset_scene(self) -> None:
        """LIBERO's seeded reset: a hard one the first time, then soft ones (module doc)."""
        self.raw.seed(self.seed)
        if self._scene_built:
            self._soft_reset()
        else:
            self.raw.reset()
            self._scene_built = True

    def _soft_reset(self) -> None:
        """LIBERO's reset without rebuilding the model (module doc): it places the objects and
        resets the robot from NumPy's RNG, the fixtures stay."""
        env = self.raw.env
        mujoco.mj_resetData(env.sim.model._model, env.sim.data._data)
        hard, env.hard_reset = env.hard_reset, False
        try:
            self.raw.reset()
        finally:
            env.hard_reset = hard
        for robot in env.robots:
            robot.gripper.current_action = np.zeros(robot.gripper.dof)

    def _drawn_state(self, init_state_id: int) -> np.ndarray:
        """The flattened MuJoCo state of drawn init state ``init_state_id``.

        Drawn before the episode's own reset: the robot's reset also sets the arm controller's
        nullspace posture to the joints it finds, which must be the noise-free pose the standard
        reset gives (as for saved states), not the drawn one.
        """
        if not self._scene_built:
            self._reset_scene()
        np.random.seed(zlib.crc32(f"{self.suite}/{self.task_id}/{init_state_id}".encode()))
        robots = self.raw.env.robots
        noise = [robot.initialization_noise for robot in robots]
        for robot in robots:
            robot.initialization_noise = {"magnitude": ARM_INIT_NOISE, "type": "gaussian"}
        try:
            self._soft_reset()
        finally:
            for robot, saved in zip(robots, noise):
                robot.initialization_noise = saved
        return self.raw.sim.get_state().flatten()

    def step(self, action, render: bool = True) -> tuple[dict, bool]:
        """Apply a (7,) LIBERO action (OSC_POSE deltas, gripper -1 open / +1 close).

        Returns (obs, success): success is the task's BDDL goal holding after this step.
        render=False skips the cameras (~60 ms each on CPU): obs then has only ``state``,
        ``joint_positions`` and ``finger_positions``; ``render()`` gives the image later.
        Raises ValueError for an action that is not 7 finite numbers.
        """
        a = validate_action(action)
        self.raw_obs, _, done, _ = self.raw.step(a)  # LIBERO's done is exactly check_success()
        return self._observe(render), bool(done)

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 upright agent-view RGB of the current state (what ``step`` returns
        as ``image``; the same pixels when called right after ``step(a, render=False)``)."""
        sim, r = self.raw.sim, self.resolution
        sim.forward()  # see _render_cameras
        self._make_context_current()
        return upright(sim.render(camera_name=AGENT_CAMERA, width=r, height=r))

    def _make_context_current(self) -> None:
        """Render into this env's own GL context. robosuite renders into whichever context is
        current, and makes one current only when creating it: with a second env in the process
        (or one made after this one's last hard reset) it would draw into the wrong one."""
        self.raw.sim._render_context_offscreen.gl_ctx.make_current()

    def _observe(self, render: bool = True) -> dict:
        sim = self.raw.sim
        obs = self._render_cameras() if render else {}
        q = np.array(sim.data.qpos[self._arm_idx], dtype=np.float64)
        fingers = np.array(sim.data.qpos[self._finger_idx], dtype=np.float64)
        obs["state"] = self.robot.state_from_joints(q, fingers)
        obs["joint_positions"] = q
        obs["finger_positions"] = fingers
        return obs

    def _render_cameras(self) -> dict:
        sim, r = self.raw.sim, self.resolution
        # mj_step leaves body poses at the last substep's start; the renderer reads those.
        sim.forward()
        self._make_context_current()
        if self.depth:
            rgb, zbuf = sim.render(camera_name=AGENT_CAMERA, width=r, height=r, depth=True)
        else:
            rgb = sim.render(camera_name=AGENT_CAMERA, width=r, height=r)
        obs = {"image": upright(rgb)}
        if self.wrist:
            obs["wrist_image"] = upright(sim.render(camera_name=WRIST_CAMERA, width=r, height=r))
        if self.depth:
            obs["depth"] = depth_from_mujoco_zbuffer(upright(zbuf), sim.model).astype(np.float32)
        return obs

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the simulator and its render context (idempotent)."""
        raw = getattr(self, "raw", None)
        if raw is not None:
            # robosuite frees the GL objects in whatever context is current: make it this one's,
            # or another env's objects (same ids) are freed instead.
            if raw.sim is not None and raw.sim._render_context_offscreen is not None:
                self._make_context_current()
            self.raw = None
            raw.close()

    def __enter__(self) -> "LiberoEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LiberoEnv({self.suite!r}, {self.task_id}, resolution={self.resolution})"
