#!/usr/bin/env bash
# Airflow's UI on loopback with three processes (api-server, scheduler, dag-processor) instead
# of `airflow standalone`, which starts ~44 processes and binds its log servers on all
# interfaces. Measured: UI up in ~17 s, 7 processes, 0.84 GB.
#   scripts/airflow.sh start   start (no-op if already running), print URL and login
#   scripts/airflow.sh stop    stop exactly the processes `start` recorded, by PID
# Settings come from the environment: AIRFLOW_HOME (make sets .airflow/), AIRFLOW_PORT (8080).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export AIRFLOW_HOME=${AIRFLOW_HOME:-$ROOT/.airflow}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}
export AIRFLOW__CORE__LOAD_EXAMPLES=False
PORT=${AIRFLOW_PORT:-8080}
AIRFLOW=${AIRFLOW_BIN:-$ROOT/.venv/bin/airflow}
PIDS="$AIRFLOW_HOME/pids"
LOGS="$AIRFLOW_HOME/logs/processes"
PROCS=(api-server scheduler dag-processor)

is_ours() {  # pid file names a live process that is still an airflow command (no PID reuse)
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    # ps -o command= is POSIX (Linux and macOS alike); /proc, the fallback, is Linux-only.
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    { ps -p "$pid" -o command= 2>/dev/null || tr '\0' ' ' < "/proc/$pid/cmdline"; } | grep -q airflow
}

stop() {
    local any=0
    for proc in "${PROCS[@]}"; do
        f="$PIDS/$proc.pid"
        [ -f "$f" ] || continue
        if is_ours "$f"; then
            pid=$(cat "$f")
            # Each process was started in its own session (os.setsid), so its group holds exactly
            # it and the workers it forked; SIGTERM lets Airflow shut down cleanly.
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            any=1
        fi
    done
    # Wait (up to 20 s) until every process in those groups, workers included, has exited.
    for _ in $(seq 1 40); do
        alive=0
        for proc in "${PROCS[@]}"; do
            pid=$(cat "$PIDS/$proc.pid" 2>/dev/null) || continue
            kill -0 -- "-$pid" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.5
    done
    for proc in "${PROCS[@]}"; do
        f="$PIDS/$proc.pid"
        pid=$(cat "$f" 2>/dev/null) || continue  # never started, or already stopped
        if kill -0 -- "-$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
        rm -f "$f"
    done
    [ $any = 1 ] && echo "airflow: stopped" || echo "airflow: nothing running"
}

start() {
    mkdir -p "$PIDS" "$LOGS"
    running=0
    for proc in "${PROCS[@]}"; do is_ours "$PIDS/$proc.pid" && running=$((running + 1)); done
    if [ $running = ${#PROCS[@]} ]; then
        echo "airflow: already running at http://127.0.0.1:$PORT"
        return 0
    fi
    [ $running -gt 0 ] && stop >/dev/null

    # A local admin password, generated once, kept in AIRFLOW_HOME (outside git), mode 600.
    pwfile="$AIRFLOW_HOME/passwords.json"
    if [ ! -s "$pwfile" ]; then
        (umask 077; "$ROOT/.venv/bin/python" -c \
            'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(12)}))' > "$pwfile")
    fi
    export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
    export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$pwfile"
    export AIRFLOW__CORE__PARALLELISM=4
    export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$PORT/execution/"
    export AIRFLOW__API__BASE_URL="http://127.0.0.1:$PORT"

    "$AIRFLOW" db migrate > "$LOGS/db-migrate.log" 2>&1 || { tail "$LOGS/db-migrate.log" >&2; exit 1; }
    # notebook_experiments' notebooks train in this pool: one at a time on a laptop, so each
    # training has every core and their times compare (the cluster gives one per worker).
    "$AIRFLOW" pools set experiments 1 "experiment notebooks that train at once" \
        >> "$LOGS/db-migrate.log" 2>&1 || { tail "$LOGS/db-migrate.log" >&2; exit 1; }
    for proc in "${PROCS[@]}"; do
        case $proc in
            api-server) args="api-server --host 127.0.0.1 --port $PORT" ;;
            scheduler) args="scheduler --skip-serve-logs" ;;
            *) args=$proc ;;
        esac
        # Its own session, so `stop` can signal the process group (it and its workers).
        # setsid(1) is Linux-only; Python's os.setsid works on macOS too.
        # shellcheck disable=SC2086
        "$ROOT/.venv/bin/python" -c 'import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])' \
            "$AIRFLOW" $args > "$LOGS/$proc.log" 2>&1 < /dev/null &
        echo $! > "$PIDS/$proc.pid"
    done
    url="http://127.0.0.1:$PORT"
    for _ in $(seq 1 180); do
        if "$ROOT/.venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('$url/api/v2/monitor/health', timeout=2)" 2>/dev/null; then
            password=$("$ROOT/.venv/bin/python" -c "import json; print(json.load(open('$pwfile'))['admin'])")
            echo "airflow: UI at $url   user: admin   password: $password"
            echo "airflow: logs in $LOGS; stop with 'make airflow-stop'"
            return 0
        fi
        for proc in "${PROCS[@]}"; do
            if ! is_ours "$PIDS/$proc.pid"; then
                echo "airflow: $proc exited during start-up; last lines of $LOGS/$proc.log:" >&2
                tail -n 20 "$LOGS/$proc.log" >&2
                stop >/dev/null
                exit 1
            fi
        done
        sleep 0.5
    done
    echo "airflow: the API server did not answer within 90 s; see $LOGS" >&2
    stop >/dev/null
    exit 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
