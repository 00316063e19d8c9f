"""PandaModel against LIBERO's own simulator: FK equals the reported eef pose, IK reaches it,
commanded_state equals the OSC controller's goal."""
import pytest

from world_env_training.eval.robot_check import check_robot_against_libero, format_report

pytestmark = pytest.mark.libero


def test_panda_model_matches_libero(report):
    d = check_robot_against_libero(n_configs=200)
    report(format_report(d))
    assert d["joint_limit_max_diff"] < 1e-9
    assert d["fk_pos_err_mm_max"] < 1.0
    assert d["fk_rot_err_deg_max"] < 0.5
    # Same quaternion sign as MuJoCo, hence the same axis-angle state as LIBERO's proprio.
    assert d["fk_quat_max_abs_diff"] < 1e-6
    assert d["state_aa_max_abs_diff"] < 1e-5
    assert d["ik_success_rate"] == 1.0
    assert d["ik_pos_err_mm_max"] < 1.0
    assert d["ik_rot_err_deg_max"] < 0.5
    assert d["cmd_pos_err_mm_max"] < 1e-3
    assert d["cmd_rot_err_deg_max"] < 1e-3
    assert d["cmd_gripper_err_m_max"] < 1e-6
