"""Environment defaults for every process of the project that starts ROS 2.

Fast DDS multicasts discovery on every network interface unless told otherwise. The
project's default keeps discovery on this machine; on a real robot network set
``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET`` (or ``SYSTEM_DEFAULT``) before starting the nodes.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

DEFAULT_DISCOVERY_RANGE = "LOCALHOST"


def apply_defaults(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set ``ROS_AUTOMATIC_DISCOVERY_RANGE`` to LOCALHOST unless it is already set.

    Changes ``env`` (default: ``os.environ``) in place and returns it. Must run before
    ``rclpy.init``: the middleware reads the variable when the context starts.
    """
    env = os.environ if env is None else env
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", DEFAULT_DISCOVERY_RANGE)
    return env
