# Source this file (bash) to get the project's environment: the virtual environment, the
# ROS 2 variables the PyPI wheels need, and the built workspace's overlay if it exists.
#   . scripts/env.sh
# ROS_AUTOMATIC_DISCOVERY_RANGE defaults to LOCALHOST so nothing leaves this machine; on a
# real robot network export ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET before sourcing.
WORLD_ENV_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WORLD_ENV_ROOT
WORLD_ENV_VENV="${WORLD_ENV_VENV:-$WORLD_ENV_ROOT/.venv}"
if [[ ! -x "$WORLD_ENV_VENV/bin/python" ]]; then
  echo "world-env: no virtual environment at $WORLD_ENV_VENV; run scripts/setup.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "$WORLD_ENV_VENV/bin/activate"
# The ROS 2 wheels install their share/ and lib/ into the venv prefix.
case ":${AMENT_PREFIX_PATH:-}:" in *":$WORLD_ENV_VENV:"*) ;; *) export AMENT_PREFIX_PATH="$WORLD_ENV_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;; esac
case ":${CMAKE_PREFIX_PATH:-}:" in *":$WORLD_ENV_VENV:"*) ;; *) export CMAKE_PREFIX_PATH="$WORLD_ENV_VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" ;; esac
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$WORLD_ENV_ROOT/runs/ros_log}"
# LIBERO renders off-screen; EGL with Mesa works without a display or GPU.
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
if [[ -f "$WORLD_ENV_ROOT/ros2_ws/install/local_setup.bash" ]]; then
  # colcon's scripts read unset variables; relax nounset while sourcing them.
  _world_env_u=$-; set +u
  # shellcheck disable=SC1091
  . "$WORLD_ENV_ROOT/ros2_ws/install/local_setup.bash"
  [[ $_world_env_u == *u* ]] && set -u; unset _world_env_u
fi
