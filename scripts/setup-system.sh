#!/usr/bin/env bash
# Debian packages some tests and tools need, installed when missing and the machine can
# (apt-get as root: CI, a course VM); elsewhere (a Mac, a learner's own Linux account) one
# line says what is skipped, and the tests that need the package skip with that reason.
#   chromium     headless browser for the JupyterLab and Airflow UI tests (~30 s to install)
#   bubblewrap   the OS sandbox `workbook grade` runs untrusted notebooks in (bwrap)
#   postgresql, redis-server   the metadata database and broker of `make airflow-cluster`
#                (only their programs are used: the cluster starts its own private server of
#                each, on loopback and its own ports, under .airflow-cluster/; on a machine
#                with systemd the packages also start system servers on 5432 and 6379, which
#                the cluster never uses: `systemctl disable --now postgresql redis-server`)
# The course repository's `make test` and `make airflow-cluster` run it without arguments
# (all four); with package names as arguments, only those (a learner's `make airflow-cluster`:
# postgresql redis-server).
# Idempotent: does nothing when every command is already on PATH.
set -euo pipefail
wanted=("$@")
[ ${#wanted[@]} = 0 ] && wanted=(chromium bubblewrap postgresql redis-server)
missing=()
for package in "${wanted[@]}"; do
    case "$package" in
        chromium) command -v chromium >/dev/null 2>&1 || missing+=(chromium) ;;
        bubblewrap) command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap) ;;
        # Debian keeps PostgreSQL's server programs off PATH, under /usr/lib/postgresql/<version>/bin.
        postgresql) { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } \
            || missing+=(postgresql) ;;
        redis-server) command -v redis-server >/dev/null 2>&1 || missing+=(redis-server) ;;
        *) echo "setup-system.sh: unknown package $package" >&2; exit 2 ;;
    esac
done
[ ${#missing[@]} = 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "set-up: installing Debian's ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    if [ $# -gt 0 ]; then
        echo "set-up: no ${missing[*]} and no apt-get as root to install them: install them" \
             "yourself (macOS: brew install postgresql@16 redis)" >&2
        exit 1
    fi
    echo "set-up: no ${missing[*]} and no apt-get as root to install them:" \
         "browser tests skip without chromium; grading runs with its Python guard alone without" \
         "bubblewrap; the Airflow cluster test skips without postgresql and redis-server"
fi
