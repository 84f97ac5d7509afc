#!/usr/bin/env bash
# Re-resolve requirements.lock from pyproject.toml in a throw-away venv (pip, so the local
# torch wheels are found), keeping the header. Review the diff, then commit it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check ".[dev]"
"$tmp/venv/bin/pip" check
{ grep '^#' requirements.lock; "$tmp/venv/bin/pip" freeze --exclude mlops-workbook; } > "$tmp/lock"
mv "$tmp/lock" requirements.lock
echo "requirements.lock updated: $(grep -vc '^#' requirements.lock) packages"
