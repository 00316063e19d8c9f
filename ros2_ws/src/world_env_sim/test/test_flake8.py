"""Code style of this package: ament_flake8 with world-env's settings (ros2_ws/ament_lint.ini)."""

from pathlib import Path

from world_env_common.lint import flake8_errors


def test_flake8():
    errors = flake8_errors(Path(__file__).resolve().parents[1])
    assert not errors, f"{len(errors)} code style errors:\n" + "\n".join(errors)
