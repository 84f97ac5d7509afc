#!/usr/bin/env bash
# Idempotent set-up, run by every make target that needs the environment.
#   1. create .venv with Python 3.11 if it is missing
#   2. install requirements.lock + the project (editable) when the lock or pyproject changed
#   3. register the Jupyter kernel "mlops-workbook" inside the venv
#   4. provision the real MNIST files (verified by sha256; a no-op when they are valid)
# A second call with nothing changed only verifies, and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
KERNEL_NAME=mlops-workbook
STAMP="$VENV/.workbook-setup"
start=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        echo "set-up: the workbook needs Python 3.11; '$PYTHON' is $("$PYTHON" --version 2>&1)." >&2
        echo "        run with PYTHON=/path/to/python3.11 make ..." >&2
        exit 2
    fi
    echo "set-up: creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi

# The stamp holds the hash of what decides what is installed: the lock file and pyproject's
# [project] table (dependencies, console scripts); tool settings such as ruff's do not count.
project_table() {
    "$VENV/bin/python" -c 'import json, tomllib
print(json.dumps(tomllib.load(open("pyproject.toml", "rb"))["project"], sort_keys=True))'
}
want=$( { cat requirements.lock; project_table; } | sha256sum | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    echo "set-up: installing the locked environment (requirements.lock ${want:0:12})"
    rm -f "$STAMP"
    log="$VENV/pip-install.log"
    if ! { "$VENV/bin/pip" install --disable-pip-version-check -r requirements.lock \
           && "$VENV/bin/pip" install --disable-pip-version-check --no-deps -e . ; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "set-up: pip install failed; the whole log is in $log" >&2
        exit 1
    fi
    "$VENV/bin/pip" check
    echo "$want" > "$STAMP"
else
    echo "set-up: environment up to date (requirements.lock ${want:0:12})"
fi

# Registered inside the venv (--sys-prefix) so JupyterLab and papermill started from the venv
# find it, and nothing outside the project is touched. The kernel logs at ERROR: at WARNING,
# every kernel papermill starts (Lab 1.3 starts four) prints "Kernel is running over TCP
# without encryption" into the learner's cell output. Loopback TCP is how Jupyter talks to a
# local kernel; the warning is for kernels reached over a network.
KERNEL_JSON="$VENV/share/jupyter/kernels/$KERNEL_NAME/kernel.json"
if [ ! -f "$KERNEL_JSON" ] || ! grep -q 'log_level=ERROR' "$KERNEL_JSON"; then
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name "$KERNEL_NAME" \
        --display-name "Python 3.11 (MLOps workbook)" >/dev/null
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
