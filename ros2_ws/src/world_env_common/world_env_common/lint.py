"""The ament linters with world-env's settings, for every ROS package's tests.

``flake8_errors(package_dir)`` and ``pep257_errors(package_dir)`` run ``ament_flake8`` and
``ament_pep257`` on a package folder with the settings in the nearest ``ament_lint.ini`` above it
(``ros2_ws/ament_lint.ini``) and return the problems found, one line each.
"""

from __future__ import annotations

import configparser
import contextlib
import io
from pathlib import Path

CONFIG_NAME = "ament_lint.ini"


def lint_config(package_dir: Path) -> Path:
    """The ``ament_lint.ini`` nearest above ``package_dir``; FileNotFoundError if none."""
    for folder in Path(package_dir).resolve().parents:
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    raise FileNotFoundError(f"no {CONFIG_NAME} above {package_dir}")


def flake8_errors(package_dir: Path) -> list[str]:
    from ament_flake8.main import main_with_errors

    # flake8 writes its report to sys.stdout.buffer; the errors come back in the return value.
    with contextlib.redirect_stdout(io.TextIOWrapper(io.BytesIO())):
        rc, errors = main_with_errors(argv=["--config", str(lint_config(package_dir)), str(package_dir)])
    return list(errors) if rc else []


def pep257_errors(package_dir: Path) -> list[str]:
    from ament_pep257.main import main

    settings = configparser.ConfigParser()
    settings.read(lint_config(package_dir))
    section = settings["pep257"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main(argv=[str(package_dir), "--convention", section["convention"],
                        "--add-ignore", *section["add-ignore"].split()])
    return [line for line in out.getvalue().splitlines() if ": D" in line] if rc else []
