#!/usr/bin/env bash
# Installs everything Goldentime and its tests use on a fresh Debian 12 machine: the Debian packages
# (ffmpeg, GStreamer + gst-rtsp-server for the simulated cameras, Chromium for the browser tests) and a
# virtual environment in .venv with the project (Cython extensions built) and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp
  gir1.2-gst-rtsp-server-1.0 python3-gi python3-gst-1.0 chromium)

missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# Exact versions from constraints.txt (scripts/lock_deps.py), for the build environment of the Cython
# extensions too; pyproject.toml keeps the ranges. Vulnerabilities in them: scripts/audit_deps.sh.
pip=(.venv/bin/pip install -q --disable-pip-version-check)
"${pip[@]}" -U pip
"${pip[@]}" -c constraints.txt setuptools wheel
"${pip[@]}" -c constraints.txt --build-constraint constraints.txt -e '.[test]'
