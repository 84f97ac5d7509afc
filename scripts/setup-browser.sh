#!/usr/bin/env bash
# Headless Chromium for the browser tests (JupyterLab screenshot), from Debian's packages.
# Idempotent: does nothing when chromium is already on PATH. Measured: ~30 s to install.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "set-up: installing Debian's chromium for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "set-up: chromium is not installed and cannot be installed here (needs apt-get as root);" >&2
    echo "        the browser test will say so. Install it with your package manager to run it." >&2
fi
