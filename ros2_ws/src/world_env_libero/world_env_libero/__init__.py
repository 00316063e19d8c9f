"""LIBERO as a ROS-free environment: ``LiberoEnv`` (one task) and ``VecLiberoEnv`` (worker processes)."""

from .env import MAX_STEPS, SUITES, LiberoEnv
from .vec_env import VecLiberoEnv

__all__ = ["LiberoEnv", "MAX_STEPS", "SUITES", "VecLiberoEnv"]
