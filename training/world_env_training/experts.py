"""Scripted LIBERO experts that read the simulator's privileged state to produce demonstrations.

No demonstrations ship with this project, so the SFT data comes from these experts. Each
expert is built from the task's BDDL goal (``raw_env.parsed_problem["goal_state"]``) and is a
plan of waypoint primitives (move, grip, push, ...) that runs closed-loop on the current
object poses read from ``raw_env.sim``: targets are re-computed every control step, so a
bumped object is re-targeted instead of missed.

Action convention (LIBERO / robosuite OSC_POSE, delta mode): ``[dx, dy, dz, drx, dry, drz,
gripper]`` in [-1, 1]; position scaled by 0.05 m and rotation by 0.5 rad (world frame) per
step; gripper -1 opens, +1 closes.

    expert = make_expert(env.env, rng=np.random.default_rng(0))
    while not expert.done:
        obs, reward, done, info = env.step(expert.act(obs))

Noise: when an ``rng`` is given, Gaussian noise (``noise_std``, default 0.05 in action units)
is added to the translation part of free-space moves only (not while grasping, pushing or
placing), so repeated demos from one init state differ without hurting success.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["Expert", "make_expert", "parse_goal", "UnsupportedGoal"]

POS_SCALE = 0.05  # metres per unit action
ROT_SCALE = 0.5  # radians per unit action
OPEN, CLOSE = -1.0, 1.0

# Gripper pointing straight down with yaw 0: hand z -> world -z, fingers close along world y.
_R_DOWN = Rotation.from_euler("x", np.pi)
_BOX_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
# Panda fingers open to ~8 cm; keep a margin so the fingertips clear the object while descending.
_MAX_GRASP_WIDTH = 0.075


class UnsupportedGoal(ValueError):
    """The BDDL goal uses a predicate or object this module has no expert for."""


def parse_goal(raw_env) -> list[tuple[str, ...]]:
    """BDDL goal as a list of lower-case predicate tuples, e.g. [("on", "bowl_1", "plate_1")]."""
    return [tuple(str(t).lower() for t in g) for g in raw_env.parsed_problem["goal_state"]]


# ----------------------------------------------------------------------------------------------
# Privileged geometry
# ----------------------------------------------------------------------------------------------
class _Scene:
    """Read-only views of the MuJoCo state: object point clouds, heights, sites, joints."""

    def __init__(self, raw_env):
        self.env = raw_env
        self._geoms: dict[str, np.ndarray] = {}

    # LIBERO hard-resets rebuild the MjSim, so never hold on to model/data across steps.
    @property
    def m(self):
        return self.env.sim.model._model

    @property
    def d(self):
        return self.env.sim.data._data

    def body_id(self, name: str) -> int:
        return self.env.obj_body_id[name]

    def pos(self, name: str) -> np.ndarray:
        return self.d.xpos[self.body_id(name)].copy()

    def _subtree_geoms(self, body: int) -> np.ndarray:
        m = self.m
        inside = np.zeros(m.nbody, bool)
        inside[body] = True
        for b in range(body + 1, m.nbody):  # MuJoCo orders bodies parent-before-child
            inside[b] = inside[m.body_parentid[b]]
        g = np.arange(m.ngeom)
        # Collision geoms only (LIBERO's visual meshes have contype 0); boxes give exact corners.
        keep = inside[m.geom_bodyid] & (m.geom_contype != 0) & (m.geom_type == mujoco.mjtGeom.mjGEOM_BOX)
        return g[keep]

    def geoms(self, name: str) -> np.ndarray:
        if name not in self._geoms:
            self._geoms[name] = self._subtree_geoms(self.body_id(name))
        return self._geoms[name]

    def points(self, name: str | None = None, geoms: np.ndarray | None = None) -> np.ndarray:
        """(N, 3) world-frame corners of an object's collision boxes."""
        g = self.geoms(name) if geoms is None else geoms
        if len(g) == 0:
            return self.pos(name)[None]
        size = self.m.geom_size[g]  # (G, 3)
        rot = self.d.geom_xmat[g].reshape(-1, 3, 3)
        local = _BOX_CORNERS[None] * size[:, None]  # (G, 8, 3)
        return (self.d.geom_xpos[g][:, None] + np.einsum("gij,gkj->gki", rot, local)).reshape(-1, 3)

    def all_names(self) -> list[str]:
        return list(self.env.objects_dict) + list(self.env.fixtures_dict)

    def boxes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Per collision box world AABB: (G, 3) mins and (G, 3) maxes."""
        g = self.geoms(name)
        if len(g) == 0:
            p = self.pos(name)[None]
            return p, p
        pts = self.points(geoms=g).reshape(len(g), 8, 3)
        return pts.min(1), pts.max(1)

    def height_under(self, xy: np.ndarray, radius: float, exclude: set[str]) -> float:
        """Top of the highest collision box overlapping the square of half-size ``radius`` at ``xy``."""
        top = self.floor_z()
        for name in self.all_names():
            if name in exclude:
                continue
            lo, hi = self.boxes(name)
            hit = np.all((lo[:, :2] < xy + radius) & (hi[:, :2] > xy - radius), axis=1)
            if hit.any():
                top = max(top, float(hi[hit, 2].max()))
        return top

    def height_along(self, a: np.ndarray, b: np.ndarray, radius: float, exclude: set[str]) -> float:
        """Highest obstacle under a ``radius``-wide object swept straight from xy ``a`` to ``b``."""
        n = max(2, int(np.linalg.norm(b - a) / 0.02) + 1)
        return max(self.height_under(a + (b - a) * t, radius, exclude) for t in np.linspace(0, 1, n))

    def floor_z(self) -> float:
        # The table (or floor) top: robosuite puts it in the arena's table_offset when there is one.
        off = getattr(self.env, "table_offset", None)
        if off is not None:
            return float(off[2])
        return 0.0

    def site_pos(self, site: str) -> np.ndarray:
        return self.env.sim.data.get_site_xpos(site).copy()

    def site_mat(self, site: str) -> np.ndarray:
        return self.env.sim.data.get_site_xmat(site).copy()

    def joint_qpos(self, joint: str) -> float:
        return float(self.env.sim.data.qpos[self.env.sim.model.get_joint_qpos_addr(joint)])

    def is_site(self, name: str) -> bool:
        return name in self.env.object_sites_dict and name not in self.env.objects_dict


def _yaw_of(rot: Rotation) -> float:
    """Yaw of a downward-pointing hand: angle of the finger axis measured like _R_DOWN's."""
    y = rot.as_matrix()[:, 1]
    return float(np.arctan2(y[0], -y[1]))


def _hand_rotation(yaw: float) -> Rotation:
    return Rotation.from_euler("z", yaw) * _R_DOWN


def _wrap(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


def _nearest_equivalent_yaw(yaw: float, current: float, period: float = np.pi) -> float:
    """The yaw equivalent to ``yaw`` modulo ``period`` that is closest to ``current``."""
    k = np.round((current - yaw) / period)
    return float(yaw + k * period)


@dataclass
class _Grasp:
    offset: np.ndarray  # grasp point minus object body position (world frame, at plan time)
    yaw: float
    width: float  # object extent between the fingers


# ----------------------------------------------------------------------------------------------
# Expert
# ----------------------------------------------------------------------------------------------
class Expert:
    """Closed-loop scripted policy for one LIBERO task. ``act`` once per control step."""

    kp_pos = 20.0  # action per metre of error (before clipping); 5 cm error saturates
    kp_rot = 2.0  # action per radian
    max_pos_action = 1.0

    def __init__(self, raw_env, goal: list[tuple[str, ...]], rng: np.random.Generator | None = None,
                 noise_std: float = 0.05):
        self.env = raw_env
        self.goal = goal
        self.rng = rng
        self.noise_std = noise_std if rng is not None else 0.0
        self.reset()

    # -- public API ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.scene = _Scene(self.env)
        self.done = False
        self.failure: str | None = None
        self.phase = "start"
        self.steps = 0
        self._obs: dict | None = None
        self._grip = OPEN
        self._yaw: float | None = None
        self._plan: Iterator[np.ndarray] | None = None

    def act(self, obs: dict) -> np.ndarray:
        self._obs = obs
        self.steps += 1
        if self._plan is None:
            self._yaw = _yaw_of(self._hand_rot())
            self._plan = self._main()
        if not self.done:
            try:
                return np.clip(next(self._plan), -1.0, 1.0)
            except StopIteration:
                self.done = True
                self.phase = "done"
        return self._hold()

    # -- observation helpers -------------------------------------------------------------------
    def _eef(self) -> np.ndarray:
        return np.asarray(self._obs["robot0_eef_pos"], float)

    def _hand_rot(self) -> Rotation:
        return Rotation.from_quat(self._obs["robot0_eef_quat"])  # xyzw

    def _gripper_width(self) -> float:
        q = self._obs["robot0_gripper_qpos"]
        return float(q[0] - q[1])

    # -- low-level control -----------------------------------------------------------------------
    def _action(self, target: np.ndarray, grip: float, noisy: bool = False, speed: float = 1.0) -> np.ndarray:
        a = np.zeros(7)
        lim = self.max_pos_action * speed
        a[:3] = np.clip(self.kp_pos * (target - self._eef()), -lim, lim)
        if noisy and self.noise_std > 0:
            a[:3] += self.rng.normal(0.0, self.noise_std, 3)
        if self._yaw is not None:
            err = (_hand_rotation(self._yaw) * self._hand_rot().inv()).as_rotvec()
            a[3:6] = np.clip(self.kp_rot * err, -1, 1)
        a[6] = grip
        return a

    def _rot_error(self) -> float:
        return float(np.linalg.norm((_hand_rotation(self._yaw) * self._hand_rot().inv()).as_rotvec()))

    def _hold(self) -> np.ndarray:
        return self._action(self._eef(), self._grip)

    def _move(self, target: Callable[[], np.ndarray] | np.ndarray, tol: float = 0.01, max_steps: int = 60,
              noisy: bool = False, speed: float = 1.0, rot_tol: float = 0.08) -> Iterator[np.ndarray]:
        """Servo the hand to ``target`` (re-evaluated every step) with the current grip and yaw."""
        fn = target if callable(target) else (lambda: target)
        for _ in range(max_steps):
            t = fn()
            if np.linalg.norm(t - self._eef()) < tol and self._rot_error() < rot_tol:
                return
            yield self._action(t, self._grip, noisy=noisy, speed=speed)

    def _gripper(self, value: float, steps: int = 10) -> Iterator[np.ndarray]:
        self._grip = value
        here = self._eef()
        for _ in range(steps):
            yield self._action(here, value)

    # -- pick and place ----------------------------------------------------------------------------
    def _grasp_for(self, name: str) -> _Grasp:
        """Top-down grasp: across the narrowest horizontal axis, or on the rim for wide objects."""
        s = self.scene
        p = s.points(name)
        body = s.pos(name)
        lo, hi = p.min(0), p.max(0)
        xy = p[:, :2] - p[:, :2].mean(0)
        evals, evecs = np.linalg.eigh(xy.T @ xy)
        minor = evecs[:, 0]
        major = evecs[:, 1]
        w_minor = float(np.ptp(xy @ minor))
        height = hi[2] - lo[2]
        center = np.r_[(p[:, :2].max(0) + p[:, :2].min(0)) / 2, 0.0]
        if w_minor <= _MAX_GRASP_WIDTH:
            yaw = np.arctan2(minor[0], -minor[1])
            z = max(hi[2] - 0.03, lo[2] + min(0.5 * height, 0.012))
            point = np.r_[center[:2], z]
            width = w_minor
        else:
            # Too wide to span (bowls, plates): pinch the rim on the side facing the robot base,
            # fingers closing radially across the wall.
            radius = 0.5 * min(np.ptp(p[:, 0]), np.ptp(p[:, 1]))
            z = hi[2] - 0.02
            direction = self._rim_direction(name, center[:2], radius, z)
            point = np.r_[center[:2] + (radius - 0.012) * direction, z]
            yaw = np.arctan2(direction[0], -direction[1])
            width = 0.02
        yaw = _nearest_equivalent_yaw(_wrap(float(yaw)), self._yaw)
        return _Grasp(offset=point - body, yaw=yaw, width=width)

    def _rim_direction(self, name: str, center: np.ndarray, radius: float, grasp_z: float) -> np.ndarray:
        """Unit xy direction from the object's centre to the rim point to pinch.

        Prefers rim points with no obstacle near the outer finger (drawer walls, neighbours), then
        little wrist rotation, then the side facing the robot.
        """
        s = self.scene
        base = self._robot_base_xy()
        toward_robot = (base - center) / (np.linalg.norm(base - center) + 1e-9)
        best, best_score = None, -np.inf
        for ang in np.linspace(0, 2 * np.pi, 16, endpoint=False):
            d = np.array([np.cos(ang), np.sin(ang)])
            outer = center + (radius + 0.012) * d
            obstacle = s.height_under(outer, 0.015, {name}) - (grasp_z - 0.045)
            yaw = np.arctan2(d[0], -d[1])
            turn = abs(_wrap(2 * (yaw - self._yaw))) / 2  # yaw is symmetric under pi
            score = -10.0 * max(obstacle, 0.0) - 0.02 * turn + 0.01 * float(d @ toward_robot)
            if score > best_score:
                best, best_score = d, score
        return best

    def _robot_base_xy(self) -> np.ndarray:
        bid = mujoco.mj_name2id(self.scene.m, mujoco.mjtObj.mjOBJ_BODY, "robot0_base")
        return self.scene.d.xpos[bid][:2].copy()

    def _pick(self, name: str) -> Iterator[np.ndarray]:
        """Grasp ``name`` top-down and lift it; returns True if it came up with the hand."""
        s = self.scene
        self.phase = f"approach {name}"
        g = self._grasp_for(name)
        self._yaw = g.yaw
        grasp_point = lambda: s.pos(name) + g.offset  # noqa: E731 -- re-targets if it moves
        hover = 0.08
        safe_z = s.points(name)[:, 2].max() + hover
        yield from self._gripper(OPEN, steps=0)
        start = self._eef()
        if start[2] < safe_z - 0.04:  # rise first so the hand doesn't sweep through the scene
            yield from self._move(np.r_[start[:2], safe_z], tol=0.02, max_steps=30, rot_tol=np.inf)
        yield from self._move(lambda: np.r_[grasp_point()[:2], max(safe_z, grasp_point()[2] + hover)],
                              tol=0.015, max_steps=80, noisy=True, rot_tol=0.15)
        self.phase = f"descend {name}"
        yield from self._move(lambda: grasp_point() + np.r_[0, 0, 0.03], tol=0.012, max_steps=40)
        yield from self._move(grasp_point, tol=0.006, max_steps=25, speed=0.5)
        self.phase = f"grasp {name}"
        z0 = s.pos(name)[2]
        yield from self._gripper(CLOSE, steps=9)
        self.phase = f"lift {name}"
        lift_to = self._eef()[2] + 0.06
        yield from self._move(lambda: np.r_[self._eef()[:2], lift_to], tol=0.015, max_steps=20, rot_tol=np.inf)
        held = s.pos(name)[2] - z0 > 0.03 and self._gripper_width() > 0.002
        if not held:
            yield from self._gripper(OPEN, steps=5)
        return held

    def _place(self, name: str, target_xy: Callable[[], np.ndarray], release_gap: float = 0.015,
               exclude: set[str] = frozenset()) -> Iterator[np.ndarray]:
        """Carry the held object so its body is over ``target_xy`` and set it down there.

        Returns False if the object slipped out of the hand on the way.
        """
        s = self.scene
        obj_p = s.points(name)
        below = s.pos(name)[2] - obj_p[:, 2].min()  # body origin height above the object's bottom
        footprint = 0.5 * max(np.ptp(obj_p[:, 0]), np.ptp(obj_p[:, 1]))
        exclude = set(exclude) | {name}
        grip_offset = s.pos(name) - self._eef()

        def support_top() -> float:
            return s.height_under(target_xy(), 0.6 * footprint, exclude)

        def hand_for(obj_target: np.ndarray) -> np.ndarray:
            return self._eef() + (obj_target - s.pos(name))

        def slipped() -> bool:
            return np.linalg.norm(s.pos(name) - self._eef() - grip_offset) > 0.04

        carry_bottom = s.height_along(s.pos(name)[:2], target_xy(), footprint, exclude) + 0.035
        self.phase = f"carry {name}"
        # Up first, then across at a height where the object clears everything below its path.
        moves = [
            (lambda: hand_for(np.r_[s.pos(name)[:2], max(carry_bottom + below, s.pos(name)[2])]),
             dict(tol=0.02, max_steps=40, rot_tol=np.inf)),
            (lambda: hand_for(np.r_[target_xy(), carry_bottom + below]),
             dict(tol=0.012, max_steps=100, noisy=True)),
        ]
        for target, kw in moves:
            for a in self._move(target, **kw):
                if slipped():
                    return False
                yield a
        self.phase = f"place {name}"
        release = lambda: hand_for(np.r_[target_xy(), support_top() + release_gap + below])  # noqa: E731
        yield from self._move(lambda: release() + np.r_[0, 0, 0.03], tol=0.012, max_steps=40)
        yield from self._move(release, tol=0.008, max_steps=30, speed=0.5)
        yield from self._gripper(OPEN, steps=6)
        self.phase = "retreat"
        yield from self._move(self._eef() + np.r_[0, 0, 0.06], tol=0.02, max_steps=15, rot_tol=np.inf)
        return True

    def _pick_and_place(self, name: str, target_xy: Callable[[], np.ndarray], attempts: int = 3,
                        **place_kw) -> Iterator[np.ndarray]:
        for _ in range(attempts):
            if (yield from self._pick(name)) and (yield from self._place(name, target_xy, **place_kw)):
                return True
        self.failure = f"could not pick and place {name}"
        return False

    # -- plan ----------------------------------------------------------------------------------
    def _main(self) -> Iterator[np.ndarray]:
        for pred in self.goal:
            yield from self._achieve(pred)

    def _achieve(self, pred: tuple[str, ...]) -> Iterator[np.ndarray]:
        op = pred[0]
        if op in ("on", "in") and len(pred) == 3:
            obj, target = pred[1], pred[2]
            yield from self._pick_and_place(obj, self._target_xy_fn(target))
            return
        raise UnsupportedGoal(f"no expert for {pred}")

    def _target_xy_fn(self, target: str) -> Callable[[], np.ndarray]:
        s = self.scene
        if s.is_site(target):
            return lambda: s.site_pos(target)[:2]
        return lambda: s.pos(target)[:2]


def make_expert(raw_env, rng: np.random.Generator | None = None, noise_std: float = 0.05) -> Expert:
    """Expert for the task loaded in ``raw_env`` (the LIBERO problem env, ``OffScreenRenderEnv.env``)."""
    return Expert(raw_env, parse_goal(raw_env), rng=rng, noise_std=noise_std)
