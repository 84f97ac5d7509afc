#!/usr/bin/env bash
# Idempotent set-up, run by every make target that needs the environment.
#   1. create .venv with Python 3.11, 3.12 or 3.13 if it is missing
#   2. install requirements.lock (pip --require-hashes) + the project (editable) when the
#      lock or pyproject changed
#   3. register the Jupyter kernel "mlops-workbook" inside the venv
#   4. provision the real MNIST files (verified by sha256; a no-op when they are valid)
# A second call with nothing changed only verifies, and takes a few seconds.
# Portable: bash 3.2 (macOS) and POSIX tools only; hashing is done by Python.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
KERNEL_NAME=mlops-workbook
STAMP="$VENV/.workbook-setup"
SUPPORTED="3.11, 3.12 or 3.13"
start=$(date +%s)

supported() {  # is "$1" a Python the lock supports (pyproject: >=3.11,<3.14)?
    "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null
}

if [ ! -x "$VENV/bin/python" ]; then
    # PYTHON=... chooses; otherwise the first supported one on PATH, python3 first.
    if [ -n "${PYTHON:-}" ]; then
        candidates=("$PYTHON")
    else
        candidates=(python3 python3.13 python3.12 python3.11)
    fi
    found=""
    for candidate in "${candidates[@]}"; do
        if command -v "$candidate" >/dev/null 2>&1 && supported "$candidate"; then
            found=$candidate
            break
        fi
    done
    if [ -z "$found" ]; then
        echo "set-up: the workbook needs Python $SUPPORTED; none was found." >&2
        for candidate in "${candidates[@]}"; do
            if command -v "$candidate" >/dev/null 2>&1; then
                echo "        $candidate is $("$candidate" --version 2>&1)" >&2
            fi
        done
        echo "        install one (python.org, 'brew install python@3.12', 'apt install python3.12-venv')" >&2
        echo "        and run: PYTHON=/path/to/python3.12 make ..." >&2
        exit 2
    fi
    echo "set-up: creating $VENV with $("$found" --version 2>&1) ($(command -v "$found"))"
    "$found" -m venv "$VENV"
elif ! supported "$VENV/bin/python"; then
    echo "set-up: $VENV holds $("$VENV/bin/python" --version 2>&1); the workbook needs Python $SUPPORTED." >&2
    echo "        remove it ('make distclean' or 'rm -rf $VENV') and run make again." >&2
    exit 2
fi
PY_VERSION=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# The stamp holds the hash of what decides what is installed (scripts/setup_stamp.py says
# what counts and why).
want=$("$VENV/bin/python" scripts/setup_stamp.py)
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    echo "set-up: installing the locked environment for Python $PY_VERSION (requirements.lock, hashes checked)"
    rm -f "$STAMP"
    log="$VENV/pip-install.log"
    # --require-hashes: every wheel must match a sha256 in the lock, or nothing is installed.
    if ! { "$VENV/bin/pip" install --disable-pip-version-check --require-hashes -r requirements.lock \
           && "$VENV/bin/pip" install --disable-pip-version-check --no-deps -e . ; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "set-up: pip install failed; the whole log is in $log" >&2
        exit 1
    fi
    "$VENV/bin/pip" check
    echo "$want" > "$STAMP"
else
    echo "set-up: environment up to date (Python $PY_VERSION, requirements.lock ${want:0:12})"
fi

# Registered inside the venv (--sys-prefix) so JupyterLab and papermill started from the venv
# find it, and nothing outside the project is touched. The kernel logs at ERROR: at WARNING,
# every kernel papermill starts (Lab 1.3 starts four) prints "Kernel is running over TCP
# without encryption" into the learner's cell output. Loopback TCP is how Jupyter talks to a
# local kernel; the warning is for kernels reached over a network.
KERNEL_JSON="$VENV/share/jupyter/kernels/$KERNEL_NAME/kernel.json"
KERNEL_DISPLAY="Python 3 (MLOps workbook)"   # as in the notebooks' metadata (workbook/notebooks.py)
if [ ! -f "$KERNEL_JSON" ] || ! grep -q 'log_level=ERROR' "$KERNEL_JSON" \
        || ! grep -qF "\"$KERNEL_DISPLAY\"" "$KERNEL_JSON"; then
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name "$KERNEL_NAME" \
        --display-name "$KERNEL_DISPLAY" >/dev/null
    "$VENV/bin/python" - "$KERNEL_JSON" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["argv"].append("--IPKernelApp.log_level=ERROR")
json.dump(spec, open(sys.argv[1], "w"), indent=1)
PY
    echo "set-up: registered Jupyter kernel '$KERNEL_NAME'"
fi

"$VENV/bin/workbook" data fetch
echo "set-up: done in $(( $(date +%s) - start )) s"
