"""Check ``CameraModel`` against where LIBERO's renderer actually draws a point.

For random arm configurations we project the end-effector site (``gripper0_grip_site``, what
LIBERO reports as ``robot0_eef_pos``) with our camera model and compare with the centroid of
that site as rendered into the agent-view image, through the same ``sim.render`` path the
observations use and our ``upright`` flip. The rendered position comes from pixels only:

- the site is drawn as a small opaque sphere (radius ~2.5 px), rendered twice, once visible
  and once invisible, and the centroid of the difference image is taken;
- all geoms (and the skybox) are hidden in both renders, so the marker is never occluded and
  the background is black; lighting is made flat (headlight ambient only), so a pixel's
  difference value is proportional to the sphere's coverage of it (MuJoCo multisamples),
  which makes the centroid the sub-pixel area centroid of the sphere's image;
- a sphere's image is an ellipse whose centre sits (r/d)^2 * offset from the projected centre:
  for r/d ~ 0.02 and offsets <= 64 px that is < 0.03 px, below what we measure.

Only poses whose marker lies wholly inside the image count. The env is modified (render
options, lights, site) and closed at the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from world_env_common.camera import CameraModel, upright
from world_env_libero.env import load_triton_before_rendering

SITE = "gripper0_grip_site"
CAMERA = "agentview"


def _make_env(suite: str, task_id: int, height: int, width: int, seed: int):
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    bench = benchmark.get_benchmark(suite)(task_order_index=0)
    task = bench.get_task(task_id)
    bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
    load_triton_before_rendering()
    env = OffScreenRenderEnv(bddl_file_name=str(bddl), camera_heights=height, camera_widths=width)
    env.seed(seed)
    env.reset()
    obs = env.set_init_state(bench.get_task_init_states(task_id)[0])
    return env, obs


def _marker_centroid(render, model, site_id: int, radius_m: float):
    """(u, v) centroid of the site's rendered sphere in the upright image, or None if the
    marker is missing or touches the image border."""
    model.site_size[site_id] = radius_m
    model.site_rgba[site_id] = (1.0, 1.0, 1.0, 0.0)
    off = render()
    model.site_rgba[site_id] = (1.0, 1.0, 1.0, 1.0)
    w = np.abs(render() - off).max(axis=-1)  # coverage * 255 under flat lighting
    rows, cols = np.nonzero(w)
    h, wd = w.shape
    if rows.size == 0 or rows.min() == 0 or cols.min() == 0 or rows.max() == h - 1 or cols.max() == wd - 1:
        return None
    total = w.sum()
    return np.array([(w * np.arange(wd)).sum() / total, (w * np.arange(h)[:, None]).sum() / total])


def check_projection_against_libero(n_poses: int = 50, resolution=128, seed: int = 0,
                                    suite: str = "libero_object", task_id: int = 0,
                                    max_attempts: int | None = None) -> dict:
    """Compare CameraModel.project with the rendered end-effector site over random arm poses.

    resolution: int (square) or (height, width). Returns a dict with count, attempts,
    resolution [H, W], max_px / mean_px / median_px (Euclidean error), mean_signed_px [du, dv]
    = mean(projected - rendered) (a pixel-centre convention slip would show as 0.5),
    render_matches_obs (the sim.render path used here gives exactly the env's observation),
    errors_px (list) and camera (CameraModel.to_dict at the first accepted pose).
    """
    import mujoco

    height, width = (resolution, resolution) if np.isscalar(resolution) else map(int, resolution)
    env, obs = _make_env(suite, task_id, height, width, seed)
    try:
        sim = env.env.sim
        m, d = sim.model._model, sim.data._data

        def render():
            return upright(sim.render(camera_name=CAMERA, height=height, width=width)).astype(np.int16)

        render_matches_obs = bool(np.array_equal(render(), upright(obs[f"{CAMERA}_image"])))

        ctx = sim._render_context_offscreen
        ctx.vopt.geomgroup[:] = 0
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        m.light_active[:] = 0
        m.vis.headlight.active = 1
        m.vis.headlight.ambient[:] = 1.0
        m.vis.headlight.diffuse[:] = 0.0
        m.vis.headlight.specular[:] = 0.0
        site_id = m.site(SITE).id
        ctx.vopt.sitegroup[m.site_group[site_id]] = 1
        # ~2.5 px radius at the ~1.1 m working distance, whatever the resolution.
        radius_m = 0.02 * 128.0 / min(height, width)

        robot = env.env.robots[0]
        qidx = np.asarray(robot._ref_joint_pos_indexes)
        jids = [m.joint(j).id for j in robot.robot_joints]
        lo, hi = m.jnt_range[jids].T
        rng = np.random.default_rng(seed)
        errors, signed, camera, attempts = [], [], None, 0
        max_attempts = max_attempts or 40 * n_poses
        while len(errors) < n_poses and attempts < max_attempts:
            attempts += 1
            d.qpos[qidx] = rng.uniform(lo, hi)
            sim.forward()
            measured = _marker_centroid(render, m, site_id, radius_m)
            if measured is None:
                continue
            cam = CameraModel.from_mujoco(m, d, CAMERA, height, width)
            camera = camera or cam.to_dict()
            uv, _ = cam.project(d.site_xpos[site_id][None])
            signed.append(uv[0] - measured)
            errors.append(float(np.linalg.norm(signed[-1])))
    finally:
        env.close()
    e = np.asarray(errors)
    return {"count": len(errors), "attempts": attempts, "resolution": [height, width],
            "max_px": float(e.max()) if e.size else float("nan"),
            "mean_px": float(e.mean()) if e.size else float("nan"),
            "median_px": float(np.median(e)) if e.size else float("nan"),
            "mean_signed_px": np.mean(signed, axis=0).tolist() if signed else [float("nan")] * 2,
            "render_matches_obs": render_matches_obs, "errors_px": errors, "camera": camera}


def format_report(result: dict) -> str:
    h, w = result["resolution"]
    du, dv = result["mean_signed_px"]
    return (f"camera check {h}x{w}: {result['count']} poses ({result['attempts']} tried), "
            f"error px max {result['max_px']:.3f} mean {result['mean_px']:.3f} "
            f"median {result['median_px']:.3f}, mean signed (du, dv) ({du:+.3f}, {dv:+.3f}), "
            f"render path == observation: {result['render_matches_obs']}")
