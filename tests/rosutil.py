"""Plumbing for tests that start ROS 2 processes: an isolated environment and cleanup.

Every process gets a ROS_DOMAIN_ID of this test run (1..100, never the default 0),
discovery limited to localhost and logs in the test's temp dir.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "ros2_ws" / "install"


def ros_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOG_DIR"] = str(tmp_path / "ros_log")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def node_executable(package: str, name: str) -> Path:
    """The executable colcon installed, the one ``ros2 run package name`` starts."""
    path = INSTALL / package / "lib" / package / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run scripts/build_ws.sh")
    return path


def installed_executables() -> list[tuple[str, str]]:
    """(package, executable) of every node entry point in the built workspace."""
    found = []
    for lib in sorted(INSTALL.glob("*/lib/*")):
        if lib.name == lib.parent.parent.name and lib.is_dir():
            found += [(lib.name, exe.name) for exe in sorted(lib.iterdir()) if os.access(exe, os.X_OK)]
    return found


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 10.0) -> tuple[str, str]:
    """Send ``sig`` and wait; kill if it does not exit in time. Returns (stdout, stderr)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        return out, err + f"\n[killed: did not exit within {timeout} s of signal {sig}]"


def stop_all(procs: list[subprocess.Popen], sig: int = signal.SIGINT,
             timeout: float = 10.0) -> list[tuple[str, float]]:
    """Signal all at once, as ``ros2 launch`` does on Ctrl-C; (stderr, seconds until each exited),
    killing those still running after ``timeout``."""
    import time

    start = time.monotonic()
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    exited: dict[int, float] = {}
    while len(exited) < len(procs) and time.monotonic() - start < timeout:
        for i, proc in enumerate(procs):
            if i not in exited and proc.poll() is not None:
                exited[i] = time.monotonic() - start
        time.sleep(0.02)
    return [(stop(proc, sig, 0.1)[1], exited.get(i, float("inf"))) for i, proc in enumerate(procs)]


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except Exception:  # noqa: BLE001 - cleanup must not mask the test's outcome
        pass
