#!/usr/bin/env bash
# JupyterLab on loopback only, opened at the course notebooks, with a fresh token printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${JUPYTER_PORT:-8888}
token=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(24))')
echo "JupyterLab (Ctrl-C to stop):"
echo "  http://127.0.0.1:$PORT/lab/tree/labs?token=$token"
echo "  token: $token   kernel: mlops-workbook"
# Jupyter refuses to run as root unless told; containers and CI machines often are root.
# (${extra[@]+...} below: macOS's bash 3.2 calls an empty array unbound under set -u.)
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)
# port_retries=0: fail loudly if the port is taken, rather than move and print a wrong URL.
exec .venv/bin/jupyter lab --no-browser --ip=127.0.0.1 --port="$PORT" \
    --ServerApp.port_retries=0 --ServerApp.root_dir="$PWD" \
    --IdentityProvider.token="$token" --LabApp.default_url=/lab/tree/labs \
    --MappingKernelManager.default_kernel_name=mlops-workbook ${extra[@]+"${extra[@]}"}
