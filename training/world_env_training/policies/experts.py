"""Scripted LIBERO experts that read the simulator's privileged state to produce demonstrations.

No demonstrations ship with this project, so the SFT data comes from these experts. Each
expert is built from the task's BDDL goal (``raw_env.parsed_problem["goal_state"]``) and is a
plan of waypoint primitives (move, grip, pull, twist, ...) that runs closed-loop on the current
object poses read from ``raw_env.sim``: targets are re-computed every control step, so a
bumped object is re-targeted instead of missed.

Supported goal predicates (anything else raises UnsupportedGoal from ``make_expert``):
- (On|In obj target), target an object or a non-articulated region (plate, basket, stove
  cook region, cabinet top, wine rack, table regions): top-down pick and place. Objects that
  fit between the fingers are grasped across their narrowest axis; wider ones (bowls, plates)
  are pinched on the rim at the side with room for the outer finger and the shortest reach.
- (In obj drawer_region): open the drawer, then place the object on the drawer floor.
- (Open|Close drawer_region) of a cabinet: pinch the handle from the front and pull / push
  the drawer in with the closed hand.
- (TurnOn|TurnOff stove): grasp the knob top-down and twist the wrist.
Multi-predicate goals (libero_10) run in the order open, place, turn on/off, close.
Not supported: the microwave (door open/close, In heating region).

Action convention (LIBERO / robosuite OSC_POSE, delta mode): ``[dx, dy, dz, drx, dry, drz,
gripper]`` in [-1, 1]; position scaled by 0.05 m and rotation by 0.5 rad (world frame) per
step; gripper -1 opens, +1 closes.

    expert = make_expert(env.env, rng=np.random.default_rng(0))
    while not expert.done:
        obs, reward, done, info = env.step(expert.act(obs))

Noise: when an ``rng`` is given, Gaussian noise (``noise_std``, default 0.05 in action units)
is added to the translation part of free-space moves only (not while grasping, pulling or
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
# Rim pinch: the hand centre sits this far inside the rim, so the open outer finger lands ~3 cm out.
_RIM_INSET = 0.012
_RIM_INSET_OUTER = 0.04 - _RIM_INSET


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

    def _obb(self, exclude: set[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Collision boxes of every object not in ``exclude``: centres, rotations, half-sizes."""
        g = [self.geoms(n) for n in self.all_names() if n not in exclude]
        g = np.concatenate(g) if g else np.zeros(0, int)
        return self.d.geom_xpos[g], self.d.geom_xmat[g].reshape(-1, 3, 3), self.m.geom_size[g]

    def height_under(self, xy: np.ndarray, radius: float, exclude: set[str]) -> float:
        """Top of the highest collision box over the square of half-size ``radius`` at ``xy``.

        Exact for rotated boxes: vertical lines on a ~1 cm grid are intersected with each box.
        """
        top = self.floor_z()
        c, rot, size = self._obb(exclude)
        if len(c) == 0:
            return top
        n = max(1, int(np.ceil(2 * radius / 0.01)))
        off = np.linspace(-radius, radius, n + 1) if n > 1 else np.zeros(1)
        grid = np.stack(np.meshgrid(off, off), -1).reshape(-1, 2) + xy  # (K, 2)
        # Box-local coordinate of a point (x, y, z) along the vertical line: a + b z.
        rel = grid[None, :, :] - c[:, None, :2]  # (G, K, 2)
        a = np.einsum("gji,gkj->gki", rot[:, :2, :], rel) - (rot[:, 2, :] * c[:, 2:3])[:, None, :]
        b = np.broadcast_to(rot[:, 2, :][:, None, :], a.shape)
        s = size[:, None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            lo = np.where(np.abs(b) > 1e-9, np.minimum((-s - a) / b, (s - a) / b),
                          np.where(np.abs(a) <= s, -np.inf, np.inf))
            hi = np.where(np.abs(b) > 1e-9, np.maximum((-s - a) / b, (s - a) / b),
                          np.where(np.abs(a) <= s, np.inf, -np.inf))
        zlo, zhi = lo.max(-1), hi.min(-1)  # (G, K)
        hit = zlo <= zhi
        if hit.any():
            top = max(top, float(zhi[hit].max()))
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
        for pred in goal:
            self._step_for(pred)  # fail at construction, not mid-episode, on goals we can't do
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
        self._rot: Rotation | None = None  # orientation target of the hand
        self._plan: Iterator[np.ndarray] | None = None

    def act(self, obs: dict) -> np.ndarray:
        self._obs = obs
        self.steps += 1
        if self._plan is None:
            self._set_yaw(_yaw_of(self._hand_rot()))
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
        if self._rot is not None:
            err = (self._rot * self._hand_rot().inv()).as_rotvec()
            a[3:6] = np.clip(self.kp_rot * err, -1, 1)
        a[6] = grip
        return a

    def _rot_error(self) -> float:
        return float(np.linalg.norm((self._rot * self._hand_rot().inv()).as_rotvec()))

    def _set_yaw(self, yaw: float) -> None:
        """Point the hand straight down with the finger axis at ``yaw``."""
        self._yaw = yaw
        self._rot = _hand_rotation(yaw)

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

    def _travel(self, target: Callable[[], np.ndarray], exclude: set[str] = frozenset(),
                **move_kw) -> Iterator[np.ndarray]:
        """Go to ``target`` over the scene: up to a clear height, across, then straight down."""
        s = self.scene
        start = self._eef()
        clear = s.height_along(start[:2], target()[:2], 0.04, set(exclude)) + 0.05
        z = max(clear, target()[2])
        if start[2] < z - 0.02:
            yield from self._move(np.r_[start[:2], z], tol=0.02, max_steps=30, rot_tol=np.inf)
        yield from self._move(lambda: np.r_[target()[:2], max(z, target()[2])], tol=0.02, max_steps=70,
                              rot_tol=0.2, noisy=True)
        yield from self._move(target, **move_kw)

    def _gripper(self, value: float, steps: int = 10) -> Iterator[np.ndarray]:
        self._grip = value
        here = self._eef()
        for _ in range(steps):
            yield self._action(here, value)

    def _close(self, min_steps: int = 6, max_steps: int = 16) -> Iterator[np.ndarray]:
        """Close until the fingers stop moving: thin rims take longer to pinch than cans."""
        self._grip = CLOSE
        here = self._eef()
        prev = self._gripper_width()
        for i in range(max_steps):
            yield self._action(here, CLOSE)
            w = self._gripper_width()
            if i >= min_steps and abs(prev - w) < 5e-4:
                break
            prev = w

    # -- pick and place ----------------------------------------------------------------------------
    def _grasp_for(self, name: str) -> _Grasp:
        """Top-down grasp: across the narrowest horizontal axis, or on the rim for wide objects."""
        s = self.scene
        p = s.points(name)
        body = s.pos(name)
        lo, hi = p.min(0), p.max(0)
        xy = p[:, :2] - p[:, :2].mean(0)
        _, evecs = np.linalg.eigh(xy.T @ xy)
        minor = evecs[:, 0]
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
            z = max(hi[2] - 0.02, lo[2] + 0.008)  # flat plates: pinch the rim just above the table
            direction = self._rim_direction(name, center[:2], radius, z)
            point = np.r_[center[:2] + (radius - _RIM_INSET) * direction, z]
            yaw = np.arctan2(direction[0], -direction[1])
            width = 0.02
        yaw = _nearest_equivalent_yaw(_wrap(float(yaw)), self._yaw)
        return _Grasp(offset=point - body, yaw=yaw, width=width)

    def _rim_direction(self, name: str, center: np.ndarray, radius: float, grasp_z: float) -> np.ndarray:
        """Unit xy direction from the object's centre to the rim point to pinch.

        Prefers rim points with no obstacle near the outer finger (drawer walls, neighbours), then
        ones closer to the robot (far reaches at table height are where the arm runs out of
        workspace), then little wrist rotation.
        """
        s = self.scene
        base = self._robot_base_xy()
        best, best_score = None, -np.inf
        for ang in np.linspace(0, 2 * np.pi, 16, endpoint=False):
            d = np.array([np.cos(ang), np.sin(ang)])
            outer = center + (radius + _RIM_INSET_OUTER) * d  # where the outer finger goes down
            obstacle = s.height_under(outer, 0.012, {name}) - (grasp_z - 0.045)
            reach = np.linalg.norm(center + radius * d - base)
            yaw = np.arctan2(d[0], -d[1])
            turn = abs(_wrap(2 * (yaw - self._yaw))) / 2  # yaw is symmetric under pi
            score = -10.0 * max(obstacle, 0.0) - 0.5 * reach - 0.01 * turn
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
        self._set_yaw(g.yaw)
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
        z0, hand0 = s.pos(name)[2], self._eef()[2]
        yield from self._close()
        self.phase = f"lift {name}"
        lift_to = hand0 + 0.06
        yield from self._move(lambda: np.r_[self._eef()[:2], lift_to], tol=0.01, max_steps=20, rot_tol=np.inf)
        held = s.pos(name)[2] - z0 > 0.5 * (self._eef()[2] - hand0) and self._gripper_width() > 0.002
        if not held:
            yield from self._gripper(OPEN, steps=5)
        return held

    def _place(self, name: str, target_xy: Callable[[], np.ndarray], release_gap: float = 0.015,
               exclude: set[str] = frozenset(), support: Callable[[], float] | None = None) -> Iterator[np.ndarray]:
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
            if support is not None:
                return support()
            return s.height_under(target_xy(), 0.6 * footprint, exclude)

        def hand_for(obj_target: np.ndarray) -> np.ndarray:
            return self._eef() + (obj_target - s.pos(name))

        def slipped() -> bool:
            return np.linalg.norm(s.pos(name) - self._eef() - grip_offset) > 0.04

        carry_bottom = s.height_along(s.pos(name)[:2], target_xy(), footprint, {name}) + 0.035
        self.phase = f"carry {name}"
        # Up first, then across at a height where the object clears everything below its path.
        moves = [
            (lambda: hand_for(np.r_[s.pos(name)[:2], max(carry_bottom + below, s.pos(name)[2])]),
             dict(tol=0.02, max_steps=40, rot_tol=np.inf)),
            (lambda: hand_for(np.r_[target_xy(), carry_bottom + below]),
             dict(tol=0.012, max_steps=100, noisy=True)),
        ]
        release = lambda: hand_for(np.r_[target_xy(), support_top() + release_gap + below])  # noqa: E731
        moves += [
            (lambda: release() + np.r_[0, 0, 0.03], dict(tol=0.012, max_steps=40)),
            (release, dict(tol=0.008, max_steps=30, speed=0.5)),
        ]
        for i, (target, kw) in enumerate(moves):
            if i == 2:
                self.phase = f"place {name}"
            for a in self._move(target, **kw):
                if slipped():
                    return False
                yield a
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

    # -- articulated objects ---------------------------------------------------------------------
    def _joint(self, name: str) -> int:
        return mujoco.mj_name2id(self.scene.m, mujoco.mjtObj.mjOBJ_JOINT, name)

    def _qpos(self, jid: int) -> float:
        return float(self.scene.d.qpos[self.scene.m.jnt_qposadr[jid]])

    def _body_boxes(self, body: int) -> np.ndarray:
        m = self.scene.m
        g = np.arange(m.ngeom)
        return g[(m.geom_bodyid == body) & (m.geom_contype != 0) & (m.geom_type == mujoco.mjtGeom.mjGEOM_BOX)]

    def _drawer(self, region: str) -> tuple[int, Callable[[], np.ndarray], np.ndarray]:
        """(joint id, live handle centre, unit opening direction) of a cabinet drawer region."""
        s = self.scene
        jid = self._joint(self.env.object_sites_dict[region].joints[0])
        # LIBERO's drawers open towards negative joint positions.
        u = -s.d.xaxis[jid].copy()
        u[2] = 0.0
        u /= np.linalg.norm(u)
        geoms = self._body_boxes(s.m.jnt_bodyid[jid])
        proj = s.d.geom_xpos[geoms] @ u
        handle_geoms = geoms[proj > proj.max() - 0.005]  # the bar that sticks out furthest
        return jid, (lambda: s.d.geom_xpos[handle_geoms].mean(0).copy()), u

    def _open_drawer(self, region: str) -> Iterator[np.ndarray]:
        """Pinch the handle bar from the front (fingers vertical) and pull it out."""
        jid, handle, u = self._drawer(region)
        obj = self.env.get_object(self.env.object_sites_dict[region].parent_name)
        if obj.is_open(self._qpos(jid)):
            return True
        self.phase = f"open {region}"
        z_hand = -u
        y_hand = np.array([0.0, 0.0, 1.0])
        self._rot = Rotation.from_matrix(np.column_stack([np.cross(y_hand, z_hand), y_hand, z_hand]))
        for _ in range(2):  # the bar can slip out of the pinch mid-pull; grab it again
            yield from self._gripper(OPEN, steps=0)
            yield from self._travel(lambda: handle() + 0.10 * u, tol=0.015, max_steps=50, rot_tol=0.1)
            yield from self._move(lambda: handle() + 0.005 * u, tol=0.008, max_steps=40, speed=0.6)
            yield from self._close()
            start = handle()
            for a in self._move(start + 0.20 * u, tol=0.01, max_steps=60, rot_tol=np.inf, speed=0.6):
                if self._qpos(jid) < -0.15:
                    break
                yield a
            yield from self._gripper(OPEN, steps=5)
            yield from self._move(self._eef() + 0.08 * u, tol=0.02, max_steps=20, rot_tol=np.inf)
            if obj.is_open(self._qpos(jid)):
                break
        return obj.is_open(self._qpos(jid))

    def _close_drawer(self, region: str) -> Iterator[np.ndarray]:
        """Push the drawer in with the closed hand pointing down against the handle bar."""
        jid, handle, u = self._drawer(region)
        obj = self.env.get_object(self.env.object_sites_dict[region].parent_name)
        if obj.is_close(self._qpos(jid)):
            return True
        self.phase = f"close {region}"
        self._set_yaw(_nearest_equivalent_yaw(np.arctan2(-u[1], -u[0]), self._yaw))  # fingers across u
        yield from self._gripper(CLOSE, steps=0)
        above = lambda: handle() + 0.045 * u + np.r_[0, 0, 0.10]  # noqa: E731
        yield from self._travel(above, tol=0.015, max_steps=50)
        yield from self._move(lambda: handle() + 0.045 * u, tol=0.01, max_steps=40)
        for a in self._move(lambda: handle() - 0.05 * u, tol=0.005, max_steps=60, rot_tol=np.inf):
            if obj.is_close(self._qpos(jid)):
                break
            yield a
        yield from self._move(self._eef() + 0.05 * u + np.r_[0, 0, 0.05], tol=0.02, max_steps=15, rot_tol=np.inf)
        return obj.is_close(self._qpos(jid))

    def _turn_knob(self, name: str, on: bool) -> Iterator[np.ndarray]:
        """Grasp the stove knob top-down and twist the wrist about the knob's (vertical) axis."""
        s = self.scene
        obj = self.env.get_object(name)
        jid = self._joint(obj.joints[0])
        done = (lambda: obj.turn_on(self._qpos(jid))) if on else (lambda: obj.turn_off(self._qpos(jid)))  # noqa: E731
        if done():
            return True
        self.phase = f"turn {'on' if on else 'off'} {name}"
        geoms = self._body_boxes(s.m.jnt_bodyid[jid])
        p = s.points(geoms=geoms)
        xy = p[:, :2] - p[:, :2].mean(0)
        minor = np.linalg.eigh(xy.T @ xy)[1][:, 0]
        self._set_yaw(_nearest_equivalent_yaw(np.arctan2(minor[0], -minor[1]), self._yaw))
        grasp = np.r_[s.d.xanchor[jid][:2], p[:, 2].max() - 0.012]
        yield from self._gripper(OPEN, steps=0)
        yield from self._travel(lambda: grasp + np.r_[0, 0, 0.08], tol=0.015, max_steps=50)
        yield from self._move(grasp, tol=0.008, max_steps=40, speed=0.6)
        yield from self._close()
        sign = np.sign(s.d.xaxis[jid][2]) * (1.0 if on else -1.0)
        for _ in range(3):
            self._set_yaw(self._yaw + sign * 0.6)
            for a in self._move(grasp, tol=1.0, rot_tol=0.1, max_steps=15):
                yield a
            if done():
                break
        yield from self._gripper(OPEN, steps=5)
        yield from self._move(self._eef() + np.r_[0, 0, 0.08], tol=0.02, max_steps=20, rot_tol=np.inf)
        return done()

    # -- plan ----------------------------------------------------------------------------------
    # Subgoal order: open before anything goes in, place before turning on / closing over it.
    _ORDER = {"open": 0, "on": 1, "in": 1, "turnon": 2, "turnoff": 2, "close": 3}

    def _main(self) -> Iterator[np.ndarray]:
        for pred in sorted(self.goal, key=lambda p: self._ORDER.get(p[0], 1)):
            yield from self._step_for(pred)()

    def _step_for(self, pred: tuple[str, ...]) -> Callable[[], Iterator[np.ndarray]]:
        """The primitive that achieves one goal predicate; raises UnsupportedGoal if there is none."""
        op, args = pred[0], pred[1:]
        sites = self.env.object_sites_dict
        objects = self.env.objects_dict

        def drawer(name: str) -> bool:
            return name in sites and bool(sites[name].joints) and "cabinet" in str(sites[name].parent_name)

        if op == "open" and drawer(args[0]):
            return lambda: self._open_drawer(args[0])
        if op == "close" and drawer(args[0]):
            return lambda: self._close_drawer(args[0])
        if op in ("turnon", "turnoff") and "stove" in args[0]:
            return lambda: self._turn_knob(args[0], on=op == "turnon")
        if op in ("on", "in") and len(args) == 2 and args[0] in objects:
            obj, target = args
            if drawer(target):
                # Into a drawer: open it, then set the object down on the drawer's floor.
                def into_drawer():
                    yield from self._open_drawer(target)
                    yield from self._pick_and_place(obj, self._target_xy_fn(target),
                                                    exclude={sites[target].parent_name},
                                                    support=self._drawer_floor(target))
                return into_drawer
            if target in sites and sites[target].joints:
                raise UnsupportedGoal(f"no expert for {pred}: target {target} is articulated")
            return lambda: self._pick_and_place(obj, self._target_xy_fn(target))
        raise UnsupportedGoal(f"no expert for {pred}")

    def _drawer_floor(self, region: str) -> Callable[[], float]:
        jid = self._joint(self.env.object_sites_dict[region].joints[0])
        geoms = self._body_boxes(self.scene.m.jnt_bodyid[jid])
        return lambda: float(self.scene.points(geoms=geoms)[:, 2].min()) + 0.01

    def _target_xy_fn(self, target: str) -> Callable[[], np.ndarray]:
        s = self.scene
        if s.is_site(target):
            return lambda: s.site_pos(target)[:2]
        return lambda: s.pos(target)[:2]


def make_expert(raw_env, rng: np.random.Generator | None = None, noise_std: float = 0.05) -> Expert:
    """Expert for the task loaded in ``raw_env`` (the LIBERO problem env, ``OffScreenRenderEnv.env``)."""
    return Expert(raw_env, parse_goal(raw_env), rng=rng, noise_std=noise_std)
