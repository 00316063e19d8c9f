"""The policy node's core without ROS: action -> joint target conversion, workspace and joint
limits, gating reasons, the chunk queue and hot-swapping policies."""

import threading

import numpy as np
import pytest

from world_env_common.robot import IKResult, PandaModel
from world_env_policy.controller import (Command, ControllerConfig, PolicyController, PolicyLoadError, Refusal,
                                         ZeroPolicy, check_checkpoint, load_policy)

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
Q = np.array([0.0, -0.16, 0.0, -2.44, 0.0, 2.23, 0.79])  # robosuite's Panda home posture
OPEN = [0.04, -0.04]
BASE = (-0.6, 0.0, 0.0)  # libero_object's robot base in the scene


class FixedPolicy:
    """Returns the same chunk every time; counts calls."""

    def __init__(self, action=(0.0,) * 7, chunk_size=3):
        self.chunk_size, self.action, self.calls = chunk_size, np.asarray(action, dtype=float), 0

    def predict(self, image, state, instruction):
        self.calls += 1
        return np.tile(self.action, (self.chunk_size, 1))


@pytest.fixture(scope="module")
def robot():
    return PandaModel(base_pos=BASE)


def make(robot, policy=None, checkpoint="fixed", **config):
    config.setdefault("base_position", BASE)
    return PolicyController(ControllerConfig(**config), policy or FixedPolicy(), checkpoint, robot=robot)


def ready(ctl, now=0.0, q=Q, fingers=OPEN):
    """Enable and feed good inputs at time ``now``."""
    ctl.on_instruction("pick up the soup")
    ctl.on_image(np.zeros((48, 64, 3), np.uint8), now)
    ctl.on_joint_state(ARM + FINGERS, [*q, *fingers], now)
    ctl.set_enabled(True, now)
    return ctl


# ---------------------------------------------------------------------- conversion
def test_zero_action_holds_the_pose(robot):
    ctl = make(robot)
    cmd = ctl.convert(Q, np.array(OPEN), np.zeros(7))
    assert cmd.arm_joint_names == ARM and cmd.finger_joint_names == FINGERS
    assert cmd.time_from_start_s == pytest.approx(0.05)
    p, r = robot.fk(Q)
    pt, rt = robot.fk(cmd.arm_positions)
    assert np.linalg.norm(pt - p) < 1e-3 and np.abs(rt - r).max() < 1e-2
    assert np.abs(cmd.arm_positions - Q).max() < 0.05
    np.testing.assert_allclose(cmd.finger_positions, OPEN)  # gripper 0 keeps it open
    assert not cmd.clamped


def test_action_moves_the_end_effector_by_the_osc_step(robot):
    ctl = make(robot)
    for action, delta in [([1, 0, 0, 0, 0, 0, 0], [0.05, 0, 0]), ([0, -0.4, 0.6, 0, 0, 0, 0], [0, -0.02, 0.03]),
                          ([0, 0, 3.0, 0, 0, 0, 0], [0, 0, 0.05])]:  # clipped to [-1, 1]
        cmd = ctl.convert(Q, np.array(OPEN), np.array(action, dtype=float))
        pt, _ = robot.fk(cmd.arm_positions)
        np.testing.assert_allclose(pt - robot.fk(Q)[0], delta, atol=1e-3)
        assert np.all(cmd.arm_positions >= robot.lower) and np.all(cmd.arm_positions <= robot.upper)


def test_rotation_and_gripper(robot):
    ctl = make(robot)
    cmd = ctl.convert(Q, np.array(OPEN), np.array([0, 0, 0, 0, 0, 0.4, 1.0]))  # 0.2 rad about z, close
    _, r = robot.fk(Q)
    _, rt = robot.fk(cmd.arm_positions)
    angle = np.arccos(np.clip((np.trace(rt @ r.T) - 1) / 2, -1, 1))
    assert angle == pytest.approx(0.2, abs=0.01)
    np.testing.assert_allclose(cmd.finger_positions, [0.0, 0.0])
    cmd = ctl.convert(Q, np.array([0.0, 0.0]), np.array([0, 0, 0, 0, 0, 0, -0.3]))  # open
    np.testing.assert_allclose(cmd.finger_positions, OPEN)
    cmd = ctl.convert(Q, np.array([0.01, -0.01]), np.zeros(7))  # keep: 0.02 of 0.08 open -> closed target
    np.testing.assert_allclose(cmd.finger_positions, [0.0, 0.0])


def test_target_is_clamped_to_the_workspace_box_in_the_base_frame(robot):
    p_base = robot.fk(Q)[0] - np.array(BASE)
    ctl = make(robot, workspace_min=p_base - [0.1, 0.1, 0.01], workspace_max=p_base + [0.01, 0.1, 0.1])
    cmd = ctl.convert(Q, np.array(OPEN), np.array([1.0, 0, -1.0, 0, 0, 0, 0]))  # +5 cm x, -5 cm z
    assert cmd.clamped
    pt = robot.fk(cmd.arm_positions)[0] - np.array(BASE)
    np.testing.assert_allclose(pt - p_base, [0.01, 0.0, -0.01], atol=1e-3)
    np.testing.assert_allclose(cmd.target_position - np.array(BASE), p_base + [0.01, 0, -0.01], atol=1e-9)


def test_an_arm_outside_the_box_is_brought_back_one_step_at_a_time(robot):
    p_base = robot.fk(Q)[0] - np.array(BASE)
    low = p_base + [0.2, -0.05, -0.05]  # the box starts 20 cm ahead in x
    ctl = make(robot, workspace_min=low, workspace_max=low + 0.3)
    cmd = ctl.convert(Q, np.array(OPEN), np.zeros(7))
    assert cmd.clamped
    np.testing.assert_allclose(cmd.target_position - np.array(BASE), p_base + [0.05, 0, 0], atol=1e-9)


def test_ik_failure_and_joint_jump_are_refused(robot, monkeypatch):
    ctl = ready(make(robot))
    miss = IKResult(q=Q.copy(), success=False, pos_err_m=0.1, rot_err_rad=0.0, iterations=100)
    monkeypatch.setattr(ctl.robot, "joints_from_state", lambda *a, **k: miss)
    out = ctl.tick(0.01)
    assert isinstance(out, Refusal) and out.reason == "IK found no joint solution for the commanded pose"
    flip = IKResult(q=Q + [0, 0, 0, 0, 0, 0, 1.0], success=True, pos_err_m=0.0, rot_err_rad=0.0, iterations=1)
    monkeypatch.setattr(ctl.robot, "joints_from_state", lambda *a, **k: flip)
    out = ctl.tick(0.02)
    assert isinstance(out, Refusal) and "moves joint(s) ['panda_joint7'] more than max_joint_step_rad=0.6" in out.reason
    monkeypatch.undo()
    assert isinstance(ctl.tick(0.03), Command)


# ---------------------------------------------------------------------- gating
def test_gating_reasons(robot):
    ctl = PolicyController(ControllerConfig(stale_after_s=0.5), None, robot=robot)
    assert ctl.tick(0.0).reason == "no policy loaded"
    ctl = make(robot, stale_after_s=0.5)
    assert ctl.tick(0.0).reason.startswith("disabled")
    ctl.set_enabled(True, 0.0)
    assert ctl.tick(0.0).reason == "no instruction received yet"
    ctl.on_instruction("  ")
    assert ctl.tick(0.0).reason == "empty instruction"
    ctl.on_instruction("pick up the soup")
    assert ctl.tick(0.0).reason == "no camera frame received yet"
    ctl.on_image(np.zeros((10, 10, 3), np.uint8), 0.0)
    assert ctl.tick(0.0).reason == "no joint_states joint state received yet"
    ctl.on_joint_state(ARM + FINGERS, [*Q, *OPEN], 0.0)
    assert isinstance(ctl.tick(0.1), Command)
    assert ctl.tick(0.6).reason == "camera stale: no valid frame for more than 0.5 s"
    ctl.on_image(np.zeros((10, 10, 3), np.uint8), 0.6)
    assert ctl.tick(0.61).reason == "joint_states stale: no valid joint state for more than 0.5 s"
    ctl.on_joint_state(ARM + FINGERS, [*Q, *OPEN], 0.61)
    assert isinstance(ctl.tick(0.62), Command)
    ctl.image_error("unsupported encoding '32FC1'", 0.63)
    assert ctl.tick(0.63).reason == "bad camera input: unsupported encoding '32FC1'"
    ctl.on_image(np.zeros((10, 10), np.uint8), 0.64)
    assert "expected an (H, W, 3) uint8 image" in ctl.tick(0.64).reason
    ctl.on_image(np.zeros((10, 10, 3), np.uint8), 0.65)
    assert isinstance(ctl.tick(0.65), Command)
    for names, positions, reason in [
            (ARM[1:], Q[1:], "missing joint(s) ['panda_joint1']"),
            (ARM, [*Q[:2], np.nan, *Q[3:]], "non-finite position for joint(s) ['panda_joint3']"),
            (ARM, Q[:6], "7 names but 6 positions"),
            (FINGERS, [np.nan, 0.0], "non-finite position for finger joint(s)")]:
        ctl.on_joint_state(names, positions, 0.66)
        out = ctl.tick(0.66)
        assert isinstance(out, Refusal) and out.reason.startswith(f"bad joint_states input: {reason}"), out
        ctl.on_joint_state(ARM, Q, 0.66)  # fingers may come separately
        assert isinstance(ctl.tick(0.66), Command)
    ctl.on_joint_state(FINGERS, [0.0, 0.0], 0.67)  # a gripper's own joint_states: fingers only
    assert isinstance(ctl.tick(0.67), Command)
    np.testing.assert_allclose(ctl.fingers, [0.0, 0.0])
    assert ctl.stats.refusals and ctl.status()["commanding"]


def test_termination_by_reflection_success_and_reset(robot):
    ctl = ready(make(robot), now=10.0)
    assert not ctl.on_reflection(True, stamp=9.5)  # a frame from before this episode
    assert not ctl.on_reflection(False, stamp=10.2, episode_id="ep1")
    assert not ctl.on_reflection(True, stamp=10.3, episode_id="ep0")  # another episode
    assert isinstance(ctl.tick(10.3), Command)
    assert ctl.on_reflection(True, stamp=10.4, episode_id="ep1", reward=0.93)
    out = ctl.tick(10.4)
    assert out.reason.startswith("episode terminated: the reflector judged it done, reward 0.93")
    ctl.reset(10.5)
    assert isinstance(ctl.tick(10.5), Command)
    assert ctl.on_success(True)
    assert ctl.tick(10.6).reason.startswith("episode terminated: task success reported")
    ctl.set_enabled(False, 10.7)
    ctl.set_enabled(True, 10.7)  # re-enabling starts a new episode
    assert isinstance(ctl.tick(10.7), Command)
    assert ctl.on_reflection(True, stamp=0.0)  # unstamped verdicts count


def test_chunks_are_replanned_when_empty_and_after_a_refusal(robot):
    policy = FixedPolicy(chunk_size=3)
    ctl = ready(make(robot, policy))
    for i in range(7):
        assert isinstance(ctl.tick(0.01 * i), Command)
    assert policy.calls == 3 and ctl.stats.replans == 3 and len(ctl.queue) == 2
    ctl.image_error("bad", 0.1)
    assert isinstance(ctl.tick(0.1), Refusal) and not ctl.queue
    ctl.on_image(np.zeros((4, 4, 3), np.uint8), 0.1)
    ctl.tick(0.1)
    assert policy.calls == 4
    ctl.on_instruction("another task")
    assert not ctl.queue
    assert ctl.stats.inference_ms_mean is not None


def test_policy_output_is_checked(robot):
    ctl = ready(make(robot, FixedPolicy(action=[np.nan] * 7)))
    assert ctl.tick(0.0).reason == "policy returned non-finite actions"
    big = FixedPolicy(action=[5.0, 0, 0, 0, 0, 0, 0])
    ctl = ready(make(robot, big))
    cmd = ctl.tick(0.0)
    assert cmd.action[0] == 1.0  # LIBERO's [-1, 1]


# ---------------------------------------------------------------------- loading
def test_check_checkpoint(tmp_path):
    assert check_checkpoint("zero") is None
    assert "no checkpoint given" in check_checkpoint("")
    assert "privileged" in check_checkpoint("expert")
    assert check_checkpoint(str(tmp_path / "none")) == f"checkpoint {tmp_path / 'none'} does not exist"
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in check_checkpoint(str(tmp_path / "file"))
    assert "neither a VLA model" in check_checkpoint(str(tmp_path))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert check_checkpoint(str(tmp_path / "model")) is None
    (tmp_path / "run" / "checkpoints" / "step_0000010").mkdir(parents=True)
    assert check_checkpoint(str(tmp_path / "run")) is None
    assert isinstance(load_policy("zero"), ZeroPolicy)
    with pytest.raises(PolicyLoadError, match="does not exist"):
        load_policy(str(tmp_path / "none"))


def test_a_refused_instruction_stops_commands_until_a_valid_one(robot):
    ctl = ready(make(robot))
    assert isinstance(ctl.tick(0.0), Command)
    ctl.instruction_error("instruction refused: too long")
    assert ctl.tick(0.01).reason == "instruction refused: too long" and not ctl.queue
    ctl.on_instruction("pick up the soup")  # the same text as before counts as valid again
    assert isinstance(ctl.tick(0.02), Command)


def test_swap_outside_the_ticks(robot, tmp_path):
    """A node whose ticks stand still (sim time before the first /clock) still swaps a finished load."""
    new = FixedPolicy()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.json").write_text("{}")
    ctl = PolicyController(ControllerConfig(base_position=BASE), FixedPolicy(), "old",
                           loader=lambda spec, device: new, robot=robot)
    ctl.load(str(tmp_path / "new"))
    assert ctl.wait_loaded(10) and ctl.checkpoint == "old"
    ctl.swap()
    assert ctl.checkpoint == str(tmp_path / "new") and ctl.status()["loading"] is None
    assert [e.ok for e in ctl.take_load_events()] == [True]


def test_hot_swap_between_ticks_and_failures_keep_the_old_policy(robot, tmp_path):
    old, new = FixedPolicy(chunk_size=2), FixedPolicy(chunk_size=2)
    release = threading.Event()

    def loader(spec, device):
        release.wait(10)
        if spec.endswith("bad"):
            raise RuntimeError("corrupt weights")
        return new

    for name in ("good", "bad"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    ctl = ready(PolicyController(ControllerConfig(base_position=BASE), old, "old", loader=loader, robot=robot))
    with pytest.raises(PolicyLoadError, match="does not exist"):
        ctl.load(str(tmp_path / "missing"))
    ctl.load(str(tmp_path / "good"))
    with pytest.raises(PolicyLoadError, match="still loading"):
        ctl.load(str(tmp_path / "bad"))
    assert isinstance(ctl.tick(0.0), Command) and ctl.status()["loading"] == str(tmp_path / "good")
    ctl.tick(0.01)
    assert old.calls == 1 and new.calls == 0 and ctl.checkpoint == "old"
    release.set()
    assert ctl.wait_loaded(10)
    ctl.tick(0.02)  # swapped in before this tick's action: the queue of the old one is dropped
    assert ctl.checkpoint == str(tmp_path / "good") and new.calls == 1 and old.calls == 1
    events = ctl.take_load_events()
    assert [e.ok for e in events] == [True] and ctl.status()["loading"] is None

    ctl.load(str(tmp_path / "bad"))
    assert ctl.wait_loaded(10)
    ctl.tick(0.03)
    events = ctl.take_load_events()
    assert [e.ok for e in events] == [False] and "corrupt weights" in events[0].message
    assert ctl.checkpoint == str(tmp_path / "good") and ctl.policy is new
    status = ctl.status()
    assert "corrupt weights" in status["load_error"] and status["loading"] is None and status["commanding"]


def test_config_validation():
    for kwargs, match in [(dict(joint_names=ARM[:6]), "7 arm joint names"),
                          (dict(joint_names=ARM[:6] + ["panda_finger_joint1"]), "distinct"),
                          (dict(control_rate_hz=0), "control_rate_hz must be a positive number"),
                          (dict(stale_after_s=float("nan")), "stale_after_s"),
                          (dict(workspace_min=(0, 0)), "workspace_min must be 3 finite numbers"),
                          (dict(workspace_min=(0.5, 0, 0), workspace_max=(0.4, 1, 1)), "below workspace_max"),
                          (dict(base_quat_wxyz=(1, 1, 0, 0)), "unit quaternion")]:
        with pytest.raises(ValueError, match=match):
            ControllerConfig(**kwargs)


def test_tiny_vla_checkpoint_loads_and_predicts_chunks(tmp_path):
    torch = pytest.importorskip("torch")
    from world_env_training.models.vla import VLAConfig, VLAPolicy

    torch.manual_seed(0)
    VLAPolicy(VLAConfig.tiny()).save_pretrained(tmp_path / "tiny")
    policy = load_policy(str(tmp_path / "tiny"))
    assert policy.chunk_size == 4
    chunk = policy.predict(np.zeros((96, 160, 3), np.uint8), np.zeros(7), "pick up the soup")  # any size
    assert chunk.shape == (4, 7) and np.all(np.isfinite(chunk))
