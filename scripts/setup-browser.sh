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
    # A Mac or a learner's own Linux account: the browser tests skip (tests/conftest.py).
    echo "set-up: no chromium and no apt-get as root to install it: the browser tests will skip"
fi
