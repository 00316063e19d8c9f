"""Spin helpers shared by the probe processes of the node tests."""

import json
import sys
import time

import rclpy


class ProbeLoop:
    """Spins ``node`` against one overall deadline; on failure writes the partial ``result``
    to OUT_DIR/result.json (the test shows it) and exits with the reason."""

    def __init__(self, node, out_dir, deadline: float, result: dict, tick_s: float):
        self.node, self.out_dir, self.deadline, self.result, self.tick_s = node, out_dir, deadline, result, tick_s

    def fail(self, text):
        (self.out_dir / "result.json").write_text(json.dumps(self.result))
        sys.exit(f"probe: {text}")

    def spin_until(self, condition, what, limit=None):
        end = min(self.deadline, time.monotonic() + limit) if limit else self.deadline
        while not condition():
            if time.monotonic() > end:
                self.fail(f"timed out waiting for {what}")
            rclpy.spin_once(self.node, timeout_sec=self.tick_s)

    def spin_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=self.tick_s)
