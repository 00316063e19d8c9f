"""The main loop every world-env node process runs."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions

from world_env_common import rosenv


class _RosArgsError(Exception):
    """Malformed ``--ros-args`` (e.g. a parameter list of mixed types)."""


_exit_code = 1  # until spin_until_signal returns one


def _end_process() -> None:
    """The last exit function: end the process without the interpreter's teardown.

    With torch and transformers loaded, the final garbage collection took 6-8 s on a loaded
    machine, past the 5 s that ``ros2 launch`` gives a node between SIGINT and SIGTERM: every
    Ctrl-C ended in "failed to terminate ... escalating to SIGTERM" and exit code -15. The exit
    functions registered after this one (the libraries loaded by the node) have run by now.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_exit_code)


def spin_until_signal(make_node: Callable[[], rclpy.node.Node], program: str,
                      config_errors: tuple[type[Exception], ...] = (), args=None,
                      on_shutdown: Callable[[rclpy.node.Node], None] | None = None) -> int:
    """Build a node with ``make_node()`` and spin it until SIGINT or SIGTERM; returns the exit code.

    The signals only set a flag the loop checks between callbacks, so a callback that runs for
    tens of milliseconds (inference, a simulator step, a render) always completes; rclpy's
    default handler raises KeyboardInterrupt at an arbitrary point inside it, which can leave a
    renderer or rclpy half-done. ``on_shutdown(node)`` runs after the loop, before the node is
    destroyed. A configuration error (one of ``config_errors``, or malformed --ros-args) prints
    ``program: message`` and gives exit code 2. For a node's own process only: when it exits,
    the process ends with the returned code without the interpreter's teardown (see ``_end_process``).
    """
    global _exit_code
    atexit.register(_end_process)
    _exit_code = _spin(make_node, program, config_errors, args, on_shutdown)
    return _exit_code


def _spin(make_node, program, config_errors, args, on_shutdown) -> int:
    rosenv.apply_defaults()
    stopping = threading.Event()
    # Until the loop's own handlers are in place, SIGINT and SIGTERM raise KeyboardInterrupt, even
    # when the process inherited them ignored (a background job of a non-interactive shell
    # starts with SIGINT ignored): a stop asked for while the node loads must not be lost.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        try:
            context = rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        except RCLError as err:
            raise _RosArgsError(str(err).split(", at ")[0]) from err
        with context:
            node = make_node()  # a Ctrl-C while the node loads is a plain KeyboardInterrupt
            try:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, lambda *_: stopping.set())
                while not stopping.is_set():
                    rclpy.spin_once(node, timeout_sec=0.1)
                if on_shutdown is not None:
                    on_shutdown(node)
            finally:
                node.destroy_node()
    except (_RosArgsError, *config_errors) as err:
        print(f"{program}: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0
