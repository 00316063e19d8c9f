"""CameraModel against LIBERO's renderer: projected vs rendered end-effector site."""

import pytest

from world_env_training.eval.camera_check import check_projection_against_libero, format_report

pytestmark = pytest.mark.libero


def _check(result, n, report):
    report(format_report(result))
    assert result["render_matches_obs"]
    assert result["count"] >= n
    assert result["max_px"] < 1.5
    # A half-pixel convention slip or a flip would show up as a mean offset.
    assert all(abs(x) < 0.2 for x in result["mean_signed_px"])


def test_projection_matches_render_128(report):
    _check(check_projection_against_libero(n_poses=50, resolution=128), 50, report)


@pytest.mark.parametrize("resolution", [256, (96, 160)])
def test_projection_other_resolutions(resolution, report):
    _check(check_projection_against_libero(n_poses=10, resolution=resolution, seed=1), 10, report)
