#!/usr/bin/env bash
# Set up a development/test environment for streamd from scratch:
#   1. system packages the tests and tools use (ffmpeg, GStreamer's RTSP server, mosquitto), when apt is available;
#   2. a virtual environment in .venv with streamd and the engines the tests exercise.
# Usage: bash tools/setup.sh            (from the project root; re-running is safe and quick)
#        STREAMD_SKIP_APT=1 bash tools/setup.sh   (no system packages)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ffmpeg                                   # test clips, decoding checks
  mosquitto mosquitto-clients              # real MQTT broker for integration tests
  python3-gi gir1.2-gst-rtsp-server-1.0    # tools/rtsp_server.py (GStreamer RTSP server, system python3)
  gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav
  prometheus                               # a real Prometheus scrapes the test server (tests/test_server_prometheus.py)
  openssl                                  # test certificates for MQTT over TLS
  systemd                                  # systemd-analyze verify/security on the unit (tests/test_hardening.py)
)

if [ -z "${STREAMD_SKIP_APT:-}" ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# dlib: the default engine; onnx: YuNet/SCRFD/MobileFaceNet; paddle: the PaddleX engine; test: pytest and friends.
.venv/bin/python -m pip install -q -e '.[dlib,onnx,paddle,convert,test]'
echo "setup: done (.venv ready)"
