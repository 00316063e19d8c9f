"""Check ``world_env_common.robot.PandaModel`` against a running LIBERO simulator.

``check_robot_against_libero`` places the model where the LIBERO scene has its robot
(``PandaModel.from_mujoco``), sets random joint configurations in the MuJoCo sim and compares
our FK with the eef pose LIBERO reports, read through LIBERO's own observable pipeline
(``robot0_eef_pos`` = site gripper0_grip_site, ``robot0_eef_quat`` = body robot0_right_hand,
xyzw). It then solves IK for poses the sim reports at other random configurations, starting
from the robot's initial configuration, and measures the residual in the sim itself. Last,
it feeds random actions to robosuite's OSC controller and compares the goal it sets with
``PandaModel.commanded_state``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from world_env_common import pose
from world_env_common.robot import PandaModel
from world_env_libero.env import load_triton_before_rendering

__all__ = ["check_robot_against_libero", "format_report"]


def _make_env(suite: str, task_id: int):
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    bench = benchmark.get_benchmark(suite)(task_order_index=0)
    task = bench.get_task(task_id)
    bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
    load_triton_before_rendering()
    env = OffScreenRenderEnv(bddl_file_name=str(bddl), camera_heights=64, camera_widths=64)
    env.seed(0)
    env.reset()
    env.set_init_state(bench.get_task_init_states(task_id)[0])
    return env


def _observe(raw_env, name: str) -> np.ndarray:
    """One observation exactly as LIBERO's observable computes it (sensor, corrupter, filter)."""
    ob = raw_env._observables[name]
    return np.array(ob._filter(ob._corrupter(ob._sensor({}))), dtype=float)


def check_robot_against_libero(
    n_configs: int = 200, seed: int = 0, suite: str = "libero_object", task_id: int = 0, n_actions: int = 20
) -> dict:
    """Compare PandaModel with LIBERO at ``n_configs`` random joint configurations.

    Returns a dict of floats: fk_pos_err_mm_{max,mean}, fk_rot_err_deg_{max,mean},
    fk_quat_max_abs_diff (sign included), state_aa_max_abs_diff (our state's axis-angle vs
    robosuite's quat2axisangle of the reported quaternion, rad), joint_limit_max_diff (rad),
    ik_success_rate, ik_pos_err_mm_{max,mean} and ik_rot_err_deg_max (IK solution set in the
    sim, pose reported by the sim vs the target), fk_us_per_call, fk_quat_us_per_call,
    ik_us_per_call; cmd_pos_err_mm_max, cmd_rot_err_deg_max, cmd_gripper_err_m_max
    (``PandaModel.commanded_state`` vs the OSC controller's goal and the gripper actuators'
    target for ``n_actions`` random actions); plus n_configs, suite, task_id and base_pos / base_quat_wxyz (lists).
    """
    from robosuite.utils.transform_utils import quat2axisangle

    env = _make_env(suite, task_id)
    try:
        raw_env = env.env
        sim = raw_env.sim
        robot = raw_env.robots[0]
        pf = robot.robot_model.naming_prefix
        panda = PandaModel.from_mujoco(sim.model, sim.data, prefix=pf)
        arm_idx, finger_idx = panda.mujoco_qpos_indices(sim.model, arm_prefix=pf)
        if not np.array_equal(arm_idx, np.asarray(robot._ref_joint_pos_indexes)):
            raise RuntimeError(f"arm qpos addresses {arm_idx} != robosuite's {robot._ref_joint_pos_indexes}")
        jnt_ids = [sim.model.joint_name2id(pf + n) for n in panda.mjcf_joint_names]
        sim_range = np.asarray(sim.model.jnt_range)[jnt_ids]
        limit_diff = float(np.max(np.abs(sim_range - np.stack([panda.lower, panda.upper], axis=1))))
        q_start = np.array(sim.data.qpos[arm_idx])

        def sim_pose(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            sim.data.qpos[arm_idx] = q
            sim.forward()
            return _observe(raw_env, f"{pf}eef_pos"), _observe(raw_env, f"{pf}eef_quat")

        rng = np.random.default_rng(seed)
        qs = [panda.random_q(rng) for _ in range(n_configs)]
        pos_err, rot_err, quat_diff, aa_diff, targets = [], [], [], [], []
        for q in qs:
            p_sim, quat_sim = sim_pose(q)
            targets.append((p_sim, pose.quat_to_matrix(quat_sim)))
            p, rot = panda.fk(q)
            pos_err.append(np.linalg.norm(p - p_sim))
            rot_err.append(pose.rotation_angle(rot, targets[-1][1]))
            quat_diff.append(np.max(np.abs(panda.fk_quat(q) - quat_sim)))
            state = panda.state_from_joints(q, sim.data.qpos[finger_idx])
            aa_diff.append(np.max(np.abs(state[3:6] - quat2axisangle(quat_sim.copy()))))

        # IK towards the poses the sim reported, from the robot's start configuration.
        ik_ok, ik_pos, ik_rot, ik_time = 0, [], [], 0.0
        for p_t, rot_t in targets:
            t0 = time.perf_counter()
            res = panda.ik(p_t, rot_t, q_start)
            ik_time += time.perf_counter() - t0
            ik_ok += res.success
            p_sim, quat_sim = sim_pose(res.q)
            ik_pos.append(np.linalg.norm(p_sim - p_t))
            ik_rot.append(pose.rotation_angle(pose.quat_to_matrix(quat_sim), rot_t))

        # commanded_state vs the goal robosuite's OSC controller sets for the same action,
        # near the start configuration; the gripper target after the command has ramped fully.
        act_rng = np.random.default_rng(seed + 1)
        finger_act = [sim.model.actuator_name2id(a) for a in robot.gripper.actuators]
        cmd_pos, cmd_rot, cmd_grip = [], [], []
        for _ in range(n_actions):
            q = panda.clamp(q_start + act_rng.normal(0.0, 0.2, panda.nq))
            fingers = act_rng.uniform([0.0, -0.04], [0.04, 0.0])
            sim.data.qpos[arm_idx] = q
            sim.data.qpos[finger_idx] = fingers
            sim.forward()
            action = act_rng.uniform(-1.2, 1.2, 7)  # beyond [-1, 1] too: the controller clips
            expected = panda.commanded_state(panda.state_from_joints(q, fingers), action)
            robot.controller.update(force=True)
            robot.control(action, policy_step=True)
            cmd_pos.append(np.linalg.norm(robot.controller.goal_pos - expected[:3]))
            goal_hand = robot.controller.goal_ori @ panda.hand_to_grip_site_rot.T
            cmd_rot.append(pose.rotation_angle(goal_hand, pose.axis_angle_to_matrix(expected[3:6])))
            for _ in range(250):
                robot.control(action, policy_step=False)
            ctrl = sim.data.ctrl[finger_act]
            cmd_grip.append(abs(panda.gripper_width(ctrl) - expected[6]))

        def per_call_us(fn) -> float:
            reps = max(1, 2000 // n_configs)
            t0 = time.perf_counter()
            for _ in range(reps):
                for q in qs:
                    fn(q)
            return (time.perf_counter() - t0) / (reps * n_configs) * 1e6

        return {
            "suite": suite,
            "task_id": task_id,
            "n_configs": n_configs,
            "base_pos": panda.base_pos.tolist(),
            "base_quat_wxyz": panda.base_quat_wxyz.tolist(),
            "joint_limit_max_diff": limit_diff,
            "fk_pos_err_mm_max": 1e3 * float(np.max(pos_err)),
            "fk_pos_err_mm_mean": 1e3 * float(np.mean(pos_err)),
            "fk_rot_err_deg_max": float(np.degrees(np.max(rot_err))),
            "fk_rot_err_deg_mean": float(np.degrees(np.mean(rot_err))),
            "fk_quat_max_abs_diff": float(np.max(quat_diff)),
            "state_aa_max_abs_diff": float(np.max(aa_diff)),
            "ik_success_rate": ik_ok / n_configs,
            "ik_pos_err_mm_max": 1e3 * float(np.max(ik_pos)),
            "ik_pos_err_mm_mean": 1e3 * float(np.mean(ik_pos)),
            "ik_rot_err_deg_max": float(np.degrees(np.max(ik_rot))),
            "cmd_pos_err_mm_max": 1e3 * float(np.max(cmd_pos)),
            "cmd_rot_err_deg_max": float(np.degrees(np.max(cmd_rot))),
            "cmd_gripper_err_m_max": float(np.max(cmd_grip)),
            "fk_us_per_call": per_call_us(panda.fk),
            "fk_quat_us_per_call": per_call_us(panda.fk_quat),
            "ik_us_per_call": ik_time / n_configs * 1e6,
        }
    finally:
        env.close()


def format_report(d: dict) -> str:
    """Human-readable summary of ``check_robot_against_libero``'s dict."""
    return "\n".join(
        [
            f"PandaModel vs LIBERO ({d['suite']} task {d['task_id']}, {d['n_configs']} random configurations)",
            f"  base pose (robot0_base): pos {np.round(d['base_pos'], 4).tolist()} "
            f"quat wxyz {np.round(d['base_quat_wxyz'], 4).tolist()}",
            f"  joint limits vs sim: max diff {d['joint_limit_max_diff']:.2e} rad",
            f"  FK position error:   max {d['fk_pos_err_mm_max']:.2e} mm, mean {d['fk_pos_err_mm_mean']:.2e} mm",
            f"  FK rotation error:   max {d['fk_rot_err_deg_max']:.2e} deg, mean {d['fk_rot_err_deg_mean']:.2e} deg",
            f"  eef quat (xyzw, sign included) max |diff| {d['fk_quat_max_abs_diff']:.2e}; "
            f"state axis-angle vs quat2axisangle max |diff| {d['state_aa_max_abs_diff']:.2e} rad",
            f"  IK from start config: success {100 * d['ik_success_rate']:.1f} %, sim residual pos max "
            f"{d['ik_pos_err_mm_max']:.3f} mm (mean {d['ik_pos_err_mm_mean']:.3f}), "
            f"rot max {d['ik_rot_err_deg_max']:.3f} deg",
            f"  commanded_state vs OSC goal: pos max {d['cmd_pos_err_mm_max']:.2e} mm, rot max "
            f"{d['cmd_rot_err_deg_max']:.2e} deg, gripper target max {d['cmd_gripper_err_m_max']:.2e} m",
            f"  time per call: FK {d['fk_us_per_call']:.1f} us, FK quat {d['fk_quat_us_per_call']:.1f} us, "
            f"IK {d['ik_us_per_call']:.0f} us",
        ]
    )


if __name__ == "__main__":
    print(format_report(check_robot_against_libero()))
