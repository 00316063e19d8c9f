"""Docstrings of this package: ament_pep257 with world-env's settings (ros2_ws/ament_lint.ini)."""

from pathlib import Path

from world_env_common.lint import pep257_errors


def test_pep257():
    errors = pep257_errors(Path(__file__).resolve().parents[1])
    assert not errors, f"{len(errors)} docstring errors:\n" + "\n".join(errors)
