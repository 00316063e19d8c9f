"""LiberoEnv / VecLiberoEnv against LIBERO itself. Kept lean: one env, a 2-worker and a 1-worker vector env."""

import os
import signal

import numpy as np
import pytest

pytest.importorskip("libero.libero")

from world_env_libero import MAX_STEPS, LiberoEnv, VecLiberoEnv  # noqa: E402
from world_env_libero.vec_env import LiberoWorkerError  # noqa: E402

SPEC = dict(suite="libero_object", task_id=0, resolution=64, wrist=True, depth=True)
ACTIONS = np.array([[1.0, 0, 0, 0, 0, 0, -1], [0, 0.5, -1, 0, 0, 0.3, 1], [0, 0, 0, 0.2, 0, 0, 1]])


@pytest.fixture(scope="module")
def env():
    with LiberoEnv(**SPEC) as e:
        yield e


@pytest.fixture(scope="module")
def first(env):
    """(obs after reset(0), [(obs, success) after each of ACTIONS])."""
    obs = env.reset(0)
    return obs, [env.step(a) for a in ACTIONS]


def test_obs_contract(env, first):
    obs = first[0]
    r = SPEC["resolution"]
    expected = {"image": ((r, r, 3), np.uint8), "wrist_image": ((r, r, 3), np.uint8),
                "depth": ((r, r), np.float32), "state": ((7,), np.float64),
                "joint_positions": ((7,), np.float64), "finger_positions": ((2,), np.float64)}
    assert set(obs) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert obs[key].shape == shape and obs[key].dtype == dtype, key
    assert 0.3 < float(np.median(obs["depth"])) < 5.0  # metres, not a [0, 1] z-buffer
    assert env.camera.width == env.camera.height == r
    assert env.instruction and env.task_name and env.num_init_states == 50
    for o, success in first[1]:
        assert set(o) == set(expected) and isinstance(success, bool) and not success


def test_images_upright_and_current(env, first):
    obs = first[1][-1][0]  # after the last step: rendered at the same instant as the state
    sim, r = env.raw.sim, SPEC["resolution"]
    np.testing.assert_array_equal(obs["image"], sim.render(camera_name="agentview", width=r, height=r)[::-1])
    np.testing.assert_array_equal(obs["wrist_image"],
                                  sim.render(camera_name="robot0_eye_in_hand", width=r, height=r)[::-1])
    # Upright, not just flipped twice: the far side of the table (larger depth) is at the top.
    assert obs["depth"][: r // 8].mean() > obs["depth"][-r // 8:].mean()


def test_state_matches_libero(env, first):
    from robosuite.utils.transform_utils import quat2axisangle

    raw = env.raw.env

    def observe(name):
        ob = raw._observables[name]
        return np.array(ob._filter(ob._corrupter(ob._sensor({}))), dtype=float)

    obs = first[1][-1][0]
    np.testing.assert_allclose(obs["state"][:3], observe("robot0_eef_pos"), atol=1e-9)
    np.testing.assert_allclose(obs["state"][3:6], quat2axisangle(observe("robot0_eef_quat")), atol=1e-6)
    np.testing.assert_allclose(obs["finger_positions"], observe("robot0_gripper_qpos"), atol=1e-12)
    np.testing.assert_allclose(obs["joint_positions"], observe("robot0_joint_pos"), atol=1e-12)
    assert obs["state"][6] == pytest.approx(obs["finger_positions"][0] - obs["finger_positions"][1])


@pytest.mark.parametrize("action, match", [
    (np.zeros(6), r"shape \(7,\)"),
    (np.zeros((1, 7)), r"shape \(7,\)"),
    ([0, 0, np.nan, 0, 0, 0, np.inf], r"non-finite .*\[2, 6\]"),
    (["a"] * 7, "7 numbers"),
])
def test_invalid_action_raises(env, first, action, match):
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_max_steps_and_bad_arguments(env):
    assert MAX_STEPS == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}
    assert env.max_steps == 280
    with pytest.raises(ValueError, match="unknown suite"):
        LiberoEnv("libero_100", 0)
    with pytest.raises(ValueError, match="init_state_id -1 out of range"):
        env.reset(-1)


def test_later_resets_match_a_fresh_env(env):
    """Only a new env's first reset is a hard one; the soft ones after any history give the same
    episodes bit for bit (the gripper's action state included: it ramps over steps)."""
    gripper = np.sign(np.sin(np.arange(40) / 5.0))
    actions = np.column_stack([0.4 * np.cos(np.arange(40) / 7.0), np.zeros((40, 5)), gripper])

    def episode(e, init_state_id):
        obs = [e.reset(init_state_id)]
        return obs + [e.step(a, render=t % 8 == 0)[0] for t, a in enumerate(actions)]

    before = episode(env, 4)[0]  # and history: the gripper left mid-ramp
    with LiberoEnv(**SPEC) as fresh:
        for init_state_id in (4, 52):
            for t, (a, b) in enumerate(zip(episode(fresh, init_state_id), episode(env, init_state_id))):
                assert set(a) == set(b)
                for key in a:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{init_state_id} step {t} {key}")
    # Closing the other env freed its own GL objects, not this one's.
    after = env.reset(4)
    for key in ("image", "wrist_image", "depth"):
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_drawn_init_states(env):
    """Ids from 50 on: new scenes from LIBERO's samplers, reproducible, with the saved states'
    fixtures and spread."""
    model = env.raw.sim.model
    saved = env.reset(0, settle_steps=0)
    fixtures = model.body_pos.copy()
    drawn = [env.reset(i, settle_steps=0) for i in (50, 51, 50)]
    np.testing.assert_array_equal(drawn[0]["image"], drawn[2]["image"])
    np.testing.assert_array_equal(drawn[0]["joint_positions"], drawn[2]["joint_positions"])
    assert not np.array_equal(drawn[0]["image"], drawn[1]["image"])
    np.testing.assert_array_equal(model.body_pos, fixtures)  # the soft reset moved no fixture
    nq = model.nq
    states = np.asarray(env._init_states)[:, 1:1 + nq]
    qpos = env.raw.sim.get_state().flatten()[1:1 + nq]
    assert np.abs(states - qpos).max(axis=1).min() > 1e-3  # not a saved state
    # Within the saved states' range: arm joints near the saved ones' mean (0.02 rad noise).
    assert np.abs(drawn[0]["joint_positions"] - states[:, :7].mean(0)).max() < 0.1
    assert np.abs(drawn[0]["joint_positions"] - saved["joint_positions"]).max() > 1e-4
    # The controller's nullspace posture is the standard reset's, as for a saved state (a policy
    # fine-tuned on saved states fails on every drawn one when it is the drawn joints instead).
    nullspace = [env.reset(i, settle_steps=0) and env.raw.env.robots[0].controller.initial_joint.copy()
                 for i in (0, 50)]
    np.testing.assert_array_equal(nullspace[0], nullspace[1])


def test_reset_is_deterministic(env, first):
    a = env.reset(3, settle_steps=2)
    b = env.reset(3, settle_steps=2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a["image"], first[0]["image"])  # another init state differs


def test_vec_env_matches_single_env_and_reports_errors(env):
    single = [env.reset(5)] + [env.step(a)[0] for a in ACTIONS]
    venv = VecLiberoEnv([SPEC, dict(SPEC)], num_workers=2)
    try:
        assert len({p.pid for p in venv._procs}) == 2
        batches = [venv.reset([5, 5])]
        for a in ACTIONS:
            obs, successes = venv.step(np.stack([a, a]))
            assert successes.shape == (2,) and successes.dtype == bool
            batches.append(obs)
        for t, (ref, batch) in enumerate(zip(single, batches)):
            for o in batch:
                for key in ref:
                    np.testing.assert_array_equal(o[key], ref[key], err_msg=f"step {t} {key}")

        with pytest.raises(ValueError, match=r"shape \(2, 7\)"):
            venv.step(np.zeros((3, 7)))
        with pytest.raises(LiberoWorkerError, match=r"(?s)env 1 .*libero_object.*init_state_id -1"):
            venv.reset([0, -1])
        assert not any(p.is_alive() for p in venv._procs)  # the error closed the workers
    finally:
        venv.close()


def test_vec_env_names_a_killed_worker_and_the_likely_cause():
    venv = VecLiberoEnv([SPEC, dict(SPEC)], num_workers=1)
    try:
        venv.reset([0, 1])
        os.kill(venv._procs[0].pid, signal.SIGKILL)  # what the kernel's OOM killer does
        venv._procs[0].join(timeout=10)
        with pytest.raises(LiberoWorkerError, match=r"(?s)envs 0, 1, each .*libero_object.*"
                                                    r"code -9 \(SIGKILL.*out-of-memory.*held 2 environments"):
            venv.step(np.zeros((2, 7)))
    finally:
        venv.close()


def test_vec_env_construction_error_names_spec():
    with pytest.raises(LiberoWorkerError, match=r"(?s)env 0 .*libero_nope.*unknown suite"):
        VecLiberoEnv([dict(suite="libero_nope", task_id=0)], num_workers=1)


def test_steps_past_robosuites_horizon(env):
    # The hardware stand-in runs for as long as it is up; robosuite's default 1000-step
    # horizon must not end the episode under it.
    env.reset(0, settle_steps=0)
    for _ in range(1001):
        env.step(np.zeros(7), render=False)
    assert env.raw.env.timestep > 1000


def test_torchvision_imports_after_rendering():
    # Regression: loading triton (via torchvision) after Mesa's llvmpipe had rendered
    # segfaulted the process; LiberoEnv now loads triton first.
    import subprocess
    import sys

    code = ("from world_env_libero.env import LiberoEnv\n"
            "with LiberoEnv('libero_object', 0, resolution=64) as env:\n"
            "    env.reset(0, settle_steps=0)\n"
            "import torchvision\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
