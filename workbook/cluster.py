"""A distributed Airflow on one machine: the stack of Airflow's official docker-compose
(CeleryExecutor, Redis broker, PostgreSQL metadata database, api-server, scheduler,
dag-processor, triggerer, Celery workers), run natively from Debian's and PyPI's packages.

``make airflow-cluster`` / ``python -m workbook.cluster start`` starts, on 127.0.0.1 only:

==============  ===========================================================================
postgresql      a private server (its own data folder and port, not the system cluster):
                the metadata database and Celery's result backend
redis           a private server (own config, loopback, protected mode, a password): the
                broker that carries "run this task" messages to the workers
api-server      the UI and the REST API (the one port a person opens)
scheduler       decides what runs; sends each task to the broker (CeleryExecutor)
dag-processor   parses dags/ and stores each DAG's serialised form
triggerer       runs deferred tasks' triggers
worker-1, -2    Celery workers: each takes tasks from the queues ``default`` and its own
                (``worker-1``...), runs them, and reports to the api-server
==============  ===========================================================================

Everything it keeps lives in one state folder (``.airflow-cluster/``, git-ignored): the
database files, Redis's append-only file, Airflow's home and logs, the generated secrets
(mode 600), the PID of every process it started. ``stop`` stops exactly those PIDs and
keeps the data, so the next start reuses the database; deleting the folder (``make clean``)
starts from nothing.

The DAG files are the same ones the embedded set-up (SQLite, ``airflow dags test``) runs.
Tasks read and write the project folder (``WORKBOOK_ROOT``), which is the shared storage
here: every worker is on this machine. On a real cluster that folder becomes a shared
volume; see docs/airflow.md, "On a real cluster".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from shared import io, paths
from workbook.airflow_api import Api

#: The worker's name, set in each Celery worker's environment and read by worker_hostname.
WORKER_NAME_ENV = "WORKBOOK_WORKER_NAME"
#: What a worker's environment never holds (``airflow_env``): the keys of the database, the
#: token signing, the encryption of connections and the UI's sessions.
WORKER_WITHHELD = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
)
#: Ports of a first start (later starts reuse the ones recorded in the state folder).
DEFAULT_PORTS = {"api": 8090, "postgres": 5439, "redis": 6389}
#: The pool the experiment notebooks run in (notebook_experiments): one slot per worker here,
#: so each worker trains one notebook at a time; `make airflow` makes it one slot in all.
EXPERIMENTS_POOL = "experiments"
#: Seconds without a heartbeat before the scheduler declares a running task lost (a worker
#: that died) and retries it elsewhere; Airflow's default is 300.
HEARTBEAT_TIMEOUT_S = 30

AIRFLOW_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
#: The parts that exit on their own some seconds after a database call fails (about 20 s
#: without PostgreSQL, measured); the api-server and the Celery workers ride it out.
GIVE_UP_WITHOUT_DATABASE = ("scheduler", "dag-processor", "triggerer")


class ClusterError(RuntimeError):
    """The cluster cannot start or be reached; the message says why and what to do."""


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` on the cluster: the Celery worker's name
    (``worker-1``...), which the UI and the REST API then show for each task instance it
    ran. Both workers share this machine's hostname, so the default (``getfqdn``) could not
    tell them apart. Elsewhere (api-server, scheduler) the machine's name."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


# --------------------------------------------------------------------------- processes


def _processes() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, process group)} of every live process on the machine (``ps``, on
    Linux and macOS alike). Zombies (exited, not yet collected by their parent) are left out:
    they run nothing and hold no port."""
    done = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,pgid=,stat="],
                          capture_output=True, text=True, check=True)  # fmt: skip
    table = {}
    for line in done.stdout.splitlines():
        pid, ppid, pgid, stat = line.split()[:4]
        if not stat.startswith("Z"):
            table[int(pid)] = (int(ppid), int(pgid))
    return table


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that are still running (zombies count as gone)."""
    return pids & set(_processes())


def _start_time(pid: int) -> str:
    """When the process started, as ``ps`` prints it (Linux and macOS): with the PID, an
    identity no other process can have."""
    done = subprocess.run(["ps", "-p", str(pid), "-o", "lstart="], capture_output=True, text=True)
    return " ".join(done.stdout.split())


def _family(roots: set[int]) -> set[int]:
    """Every live process in the process groups of ``roots`` or descended from them (the
    PostgreSQL server's children each call setsid, so they leave its group)."""
    table = _processes()
    found = {pid for pid, (_, pgid) in table.items() if pgid in roots} | (roots & set(table))
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


class Cluster:
    """One cluster's state folder and processes. ``start()``, ``stop()``, ``status()``."""

    def __init__(
        self,
        state: str | os.PathLike[str] | None = None,
        *,
        workers: int | None = None,
        ports: dict[str, int] | None = None,
        root: str | os.PathLike[str] | None = None,
        dags: str | os.PathLike[str] | None = None,
        worker_concurrency: int = 1,
        schedules: bool | None = None,
        heartbeat_timeout: int = HEARTBEAT_TIMEOUT_S,
    ) -> None:
        self.root = Path(root or paths.project_root()).resolve()
        self.state = Path(state or self.root / ".airflow-cluster").resolve()
        self.dags = Path(dags or self.root / "dags").resolve()
        saved = self._saved()
        self.ports = {**DEFAULT_PORTS, **saved.get("ports", {}), **(ports or {})}
        self.workers = workers if workers is not None else saved.get("workers", 2)
        if self.workers < 1:
            raise ClusterError(f"workers must be at least 1, not {self.workers}")
        self.worker_concurrency = worker_concurrency
        # Each task's runner heartbeats every 5 s ([workers] min_heartbeat_interval), so
        # anything above ~15 s is several missed beats, never one slow answer.
        if heartbeat_timeout < 15:
            raise ClusterError(f"heartbeat_timeout must be at least 15 s, not {heartbeat_timeout}")
        self.heartbeat_timeout = heartbeat_timeout
        # False: the scheduler runs only what is triggered, never a DAG's own schedule
        # ([scheduler] use_job_schedule); the tests compare runs without a daily run between.
        self.schedules = schedules if schedules is not None else saved.get("schedules", True)
        self.url = f"http://127.0.0.1:{self.ports['api']}"
        self.airflow_home = self.state / "airflow"
        self.pids = self.state / "pids"
        self.logs = self.state / "logs"
        self.pg_dir = self.state / "postgres"
        self.redis_dir = self.state / "redis"
        self.secrets_dir = self.state / "secrets"
        self._children: dict[str, subprocess.Popen] = {}  # started by this process: reaped
        self._spawned: list[str] = []  # started by the current start() call
        self._log_offsets: dict[str, int] = {}

    # ------------------------------------------------------------------ names and files

    @property
    def worker_names(self) -> list[str]:
        return [f"worker-{i}" for i in range(1, self.workers + 1)]

    @property
    def process_names(self) -> list[str]:
        """Every process start() launches, in start order (stop() goes in reverse)."""
        return ["postgres", "redis", *AIRFLOW_PROCESSES, *self.worker_names]

    def _saved(self) -> dict[str, Any]:
        path = self.state / "cluster.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ClusterError(f"{path}: unreadable ({exc}); delete it to start afresh") from exc

    def _pid(self, name: str) -> int | None:
        """The recorded PID of ``name`` if that process still runs and is still ours (a PID
        file can outlive its process, and the number can be reused by another program)."""
        try:
            pid_text, started = (self.pids / f"{name}.pid").read_text().split(maxsplit=1)
            pid = int(pid_text)
        except (FileNotFoundError, ValueError):
            return None
        # The start time too: after a reboot the number may belong to any other program.
        if alive({pid}) and _start_time(pid) == started.strip():
            return pid
        return None

    def secrets(self) -> dict[str, str]:
        """Generated once per state folder, kept in ``secrets/`` (mode 700, files 600):
        the admin's, the database's and Redis's passwords, and the keys every Airflow
        process must share (tokens signed by one are checked by another)."""
        path = self.secrets_dir / "secrets.json"
        if path.is_file():
            return json.loads(path.read_text())
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        from cryptography.fernet import Fernet  # Airflow's own dependency

        values = {
            "admin": secrets.token_urlsafe(12),
            "postgres": secrets.token_urlsafe(24),
            "redis": secrets.token_urlsafe(24),
            "jwt_secret": secrets.token_urlsafe(32),
            "api_secret_key": secrets.token_urlsafe(32),
            "fernet_key": Fernet.generate_key().decode(),
        }
        _write_private(path, json.dumps(values, indent=2) + "\n")
        return values

    def admin_password(self) -> str:
        return self.secrets()["admin"]

    # ------------------------------------------------------------------ environment

    def airflow_env(self, worker: str | None = None) -> dict[str, str]:
        """The environment of every Airflow process of this cluster. Airflow settings from
        the caller's shell (AIRFLOW__*) are not passed on: the cluster is configured here,
        in one place, whatever shell starts it."""
        s = self.secrets()
        db = f"airflow:{s['postgres']}@127.0.0.1:{self.ports['postgres']}/airflow"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "AIRFLOW_HOME": str(self.airflow_home),
            "WORKBOOK_ROOT": str(self.root),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__FERNET_KEY": s["fernet_key"],
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "workbook.cluster.worker_hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                self.secrets_dir / "passwords.json"
            ),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__SECRET_KEY": s["api_secret_key"],
            "AIRFLOW__API__WORKERS": "1",  # one UI user here; each worker costs ~0.2 GB
            "AIRFLOW__API_AUTH__JWT_SECRET": s["jwt_secret"],
            # psycopg2, Airflow's recommended driver; the async engine the API server also
            # opens goes through asyncpg (Airflow derives postgresql+asyncpg from this URL).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://:{s['redis']}@127.0.0.1:{self.ports['redis']}/0",
            # Task states come back through Redis, not the database: a worker then needs no
            # database password at all (Airflow 3's workers report through the api-server).
            "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://:{s['redis']}@127.0.0.1:{self.ports['redis']}/1",
            # Celery's delivery guarantees, written out (these are Airflow's defaults): a
            # worker acknowledges a task message only once the task has finished (acks late)
            # and reserves one message at a time, so a worker that dies loses no message it
            # had not started. Redis hands an unacknowledged message to another worker only
            # after the visibility timeout (a day): a task lost with its worker is retried
            # sooner by the scheduler, below.
            "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
            # A running task whose heartbeat stops (its worker died) is failed after this
            # many seconds, then retried (retries=1) on a worker that is alive.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        })  # fmt: skip
        if not self.schedules:
            env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
        if worker:
            env[WORKER_NAME_ENV] = worker
            # A Celery worker runs DAG code and learners' notebooks: it gets only what it
            # needs, the broker (Redis) and the api-server's execution API, whose short-lived
            # token comes with each task. No database password (it never opens the database
            # in Airflow 3), no JWT signing secret (it signs nothing: the scheduler issues the
            # task's token, the api-server checks it), no Fernet key (connections and
            # variables reach it decrypted, through the execution API), no UI secret.
            for key in WORKER_WITHHELD:
                env.pop(key, None)
        return env

    # ------------------------------------------------------------------ start

    def start(self, echo=print) -> float:
        """Start whatever is not running yet; returns the seconds it took. Raises
        ClusterError (after stopping what it started) when a part does not come up."""
        began = time.perf_counter()
        for folder in (self.state, self.pids, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        io.atomic_write_json(self.state / "cluster.json", {
            "ports": self.ports, "workers": self.workers, "schedules": self.schedules})  # fmt: skip
        self._write_passwords_file()
        fewer_workers = False
        for extra in sorted(p.stem for p in self.pids.glob("worker-*.pid")):
            if extra not in self.worker_names:  # fewer workers than last time
                self.stop_process(extra)
                fewer_workers = True
        missing = [name for name in self.process_names if self._pid(name) is None]
        self._spawned = []
        try:
            self._start_postgres(echo)
            if "postgres" in missing:
                missing += self._restart_what_lost_the_database(missing, echo)
            self._start_redis(echo)
            # With every Airflow part running, the tables are at their schema and the pool
            # has their slots: the two `airflow` commands (~10 s) would change nothing.
            if fewer_workers or set(missing) - {"postgres", "redis"}:
                self._migrate(echo)
            for name in (*AIRFLOW_PROCESSES, *self.worker_names):
                if self._pid(name) is None:
                    self._spawn_airflow(name)
            self._wait_until_healthy(echo)
        except BaseException:
            for name in reversed(self._spawned):  # what this call started, not what ran
                self.stop_process(name)
            raise
        if 0 < len(missing) < len(self.process_names):
            echo(f"cluster: restarted {', '.join(missing)} (the rest was running)")
        elif not missing:
            echo("cluster: already running")
        return time.perf_counter() - began

    def _write_passwords_file(self) -> None:
        # Airflow's simple auth manager reads {"user": "password"}; same admin password as
        # the one printed, generated once.
        path = self.secrets_dir / "passwords.json"
        _write_private(path, json.dumps({"admin": self.admin_password()}) + "\n")

    def _airflow_command(self, name: str) -> list[str]:
        airflow = str(Path(sys.executable).with_name("airflow"))
        if name == "api-server":
            return [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.ports["api"])]
        if name in ("scheduler", "triggerer"):
            # The log servers (ports 8793/8794) bind every interface and have no host
            # setting; the api-server reads task logs from the shared log folder instead.
            return [airflow, name, "--skip-serve-logs"]
        if name == "dag-processor":
            return [airflow, "dag-processor"]
        return [
            airflow, "celery", "worker", "--celery-hostname", f"{name}@%h",
            "--queues", f"default,{name}", "--concurrency", str(self.worker_concurrency),
            "--skip-serve-logs",
        ]  # fmt: skip

    def _spawn_airflow(self, name: str) -> int:
        worker = name if name.startswith("worker-") else None
        return self._spawn(name, self._airflow_command(name), self.airflow_env(worker))

    def _spawn(self, name: str, command: list[str], env: dict[str, str], user=None) -> int:
        """Start ``command`` in a session of its own (so stop() can signal it and every
        process it forked as one group), output to logs/<name>.log, PID recorded."""
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        self._log_offsets[name] = log.tell()  # readiness is read from this start's lines only
        try:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.root, start_new_session=True,
                user=user, group=user, extra_groups=[] if user else None,
            )  # fmt: skip
        finally:
            log.close()
        self._children[name] = proc
        self._spawned.append(name)
        io.atomic_write_text(self.pids / f"{name}.pid", f"{proc.pid} {_start_time(proc.pid)}\n")
        return proc.pid

    def _check_started(self, name: str) -> None:
        self._reap(name)
        if self._pid(name) is None:
            raise ClusterError(f"{name} exited during start-up; last lines of its log:\n"
                               + self.log_tail(name))  # fmt: skip

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # PostgreSQL -------------------------------------------------------------------

    def _start_postgres(self, echo) -> None:
        bindir = postgres_bindir()
        user = _postgres_user()
        data = self.pg_dir / "data"
        if not (data / "PG_VERSION").is_file():
            echo(f"cluster: creating the PostgreSQL database in {paths.show(data)}")
            self._initdb(bindir, data, user)
        if self._pid("postgres") is None:
            self._spawn("postgres", [
                str(bindir / "postgres"), "-D", str(data), "-p", str(self.ports["postgres"]),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "unix_socket_directories=",  # TCP on loopback only, no socket file
            ], dict(os.environ), user=user)  # fmt: skip
        self._wait_for("postgres", self._postgres_ready, 60)
        self._ensure_database()

    def _initdb(self, bindir: Path, data: Path, user: str | None) -> None:
        self.pg_dir.mkdir(parents=True, exist_ok=True)
        if user:
            _check_traversable(self.pg_dir, user)
            shutil.chown(self.pg_dir, user, user)
        os.chmod(self.pg_dir, 0o700)
        pwfile = self.pg_dir / "pwfile"
        _write_private(pwfile, self.secrets()["postgres"] + "\n")
        if user:
            shutil.chown(pwfile, user, user)
        # Into a temporary folder, renamed when complete: an initdb cut short (a killed
        # process, a full disk) leaves no half-made data folder that looks finished.
        partial = data.with_name(data.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            done = subprocess.run([
                str(bindir / "initdb"), "-D", str(partial), "-U", "airflow", f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions",
            ], capture_output=True, text=True, user=user, group=user,
               extra_groups=[] if user else None, cwd=self.pg_dir)  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise ClusterError(f"initdb failed:\n{done.stdout}{done.stderr}")
        partial.rename(data)

    def _pg_connect(self, dbname: str = "airflow", timeout: int = 2):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.ports["postgres"], user="airflow",
            password=self.secrets()["postgres"], dbname=dbname, connect_timeout=timeout,
        )  # fmt: skip

    def _postgres_ready(self) -> bool:
        import psycopg2

        try:
            self._pg_connect("postgres").close()
        except psycopg2.OperationalError:
            return False
        return True

    def _ensure_database(self) -> None:
        conn = self._pg_connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow'")
                if cur.fetchone() is None:
                    cur.execute("CREATE DATABASE airflow")
        finally:
            conn.close()

    # Redis ------------------------------------------------------------------------

    def _start_redis(self, echo) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise ClusterError(
                "redis-server is not installed: `make airflow-cluster` installs Debian's "
                "redis-server with apt-get as root; elsewhere install it (macOS: brew install redis)"
            )
        self.redis_dir.mkdir(mode=0o700, exist_ok=True)
        conf = self.redis_dir / "redis.conf"
        _write_private(conf, "\n".join([
            "bind 127.0.0.1",
            f"port {self.ports['redis']}",
            "protected-mode yes",
            f"requirepass {self.secrets()['redis']}",
            f"dir {self.redis_dir}",
            "daemonize no",
            "appendonly yes",  # queued task messages survive a restart of Redis
            'save ""',
            "",
        ]))  # fmt: skip
        if self._pid("redis") is None:
            self._spawn("redis", [binary, str(conf)], dict(os.environ))
        self._wait_for("redis", self._redis_ready, 30)

    def _redis_ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.ports["redis"],
                                    password=self.secrets()["redis"], socket_timeout=2).ping())  # fmt: skip
        except redis.RedisError:
            return False

    # Airflow ----------------------------------------------------------------------

    def _migrate(self, echo) -> None:
        """Create or upgrade Airflow's tables (a no-op check on a second start), then make
        sure the experiments pool has one slot per worker."""
        airflow = str(Path(sys.executable).with_name("airflow"))
        env = self.airflow_env()
        for step in (
            ["db", "migrate"],
            ["pools", "set", EXPERIMENTS_POOL, str(self.workers * self.worker_concurrency),
             "experiment notebooks that train at once (one per worker slot)"],
        ):  # fmt: skip
            log = self.logs / f"airflow-{step[0]}.log"
            with open(log, "ab") as out:
                done = subprocess.run([airflow, *step], stdout=out, stderr=subprocess.STDOUT,
                                      env=env, cwd=self.root, timeout=600)  # fmt: skip
            if done.returncode != 0:
                raise ClusterError(f"airflow {' '.join(step[:2])} failed; see {log}:\n"
                                   + "\n".join(log.read_text().splitlines()[-15:]))  # fmt: skip

    def health(self) -> dict[str, Any]:
        """The api-server's /api/v2/monitor/health, or {} when it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=3) as r:
                return json.load(r)
        except (OSError, ValueError):
            return {}

    def _workers_ready(self) -> list[str]:
        """Workers whose log, since this start, says Celery is ready to take tasks (a worker
        that was already running counts as ready)."""
        ready = []
        for w in self.worker_names:
            if w not in self._spawned:
                ready.append(w)
                continue
            with open(self.logs / f"{w}.log", "rb") as f:
                f.seek(self._log_offsets.get(w, 0))
                if f"{w}@".encode() in (text := f.read()) and b" ready." in text:
                    ready.append(w)
        return ready

    def _wait_until_healthy(self, echo, timeout: float = 240) -> None:
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in self.process_names:
                self._restart_if_it_lost_the_database(name, echo)
                self._check_started(name)
            h = self.health()
            if all(h.get(p, {}).get("status") == "healthy" for p in parts) and len(
                self._workers_ready()
            ) == len(self.worker_names):
                return
            time.sleep(1)
        raise ClusterError(f"not healthy within {timeout:.0f} s: {self.health() or 'no answer'}; "
                           f"logs in {self.logs}")  # fmt: skip

    def _restart_what_lost_the_database(self, missing: list[str], echo) -> list[str]:
        """PostgreSQL was down while Airflow ran: the parts that give up without it are
        stopped now (PostgreSQL is back, so they shut down cleanly) and started again below,
        rather than left to exit at some later moment, after start() has returned.
        Returns the parts it stopped."""
        lost = [n for n in GIVE_UP_WITHOUT_DATABASE if n not in missing and self._pid(n)]
        if lost:
            echo(f"cluster: PostgreSQL was down; restarting {', '.join(lost)}, which exit "
                 "without it")  # fmt: skip
            for name in lost:
                self.stop_process(name)
        return lost

    def _restart_if_it_lost_the_database(self, name: str, echo) -> None:
        # An Airflow part that was still running when start() began (so it was not started
        # again) may exit during the start, e.g. one that lost the database without this
        # start having restarted PostgreSQL (_restart_what_lost_the_database covers the parts
        # known to give up when it did). Start it once more; a part this call started that
        # exits is an error.
        if name in self._spawned or name in ("postgres", "redis") or self._pid(name):
            return
        echo(f"cluster: {name} exited during the start (it had lost the database); "
             "starting it again")  # fmt: skip
        self._spawn_airflow(name)

    def _wait_for(self, name: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            self._check_started(name)
            time.sleep(0.3)
        raise ClusterError(f"{name} did not answer within {timeout:.0f} s:\n" + self.log_tail(name))

    # ------------------------------------------------------------------ stop, status

    def stop_process(self, name: str, sig: int = signal.SIGTERM, wait: float = 30) -> bool:
        """Signal ``name``'s process group, wait up to ``wait`` s until no process of its
        family is left (its group, its descendants, and their own groups: Airflow's task
        runner and the kernels papermill starts leave the worker's group), then SIGKILL
        whatever is. PostgreSQL gets SIGINT, its "fast" shutdown (it ends its sessions,
        checkpoints, and exits after its children). Returns whether it was running."""
        pid = self._pid(name)
        if pid is None:
            (self.pids / f"{name}.pid").unlink(missing_ok=True)  # stale: nothing to stop
            return False
        if name == "postgres" and sig == signal.SIGTERM:
            sig = signal.SIGINT
        family = _family({pid})
        _signal_group(pid, sig)
        deadline = time.monotonic() + wait
        while self._reap(name) and time.monotonic() < deadline:
            family |= _family(family)  # children started since, orphans re-parented
            if not alive(family):
                break
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while (left := alive(family | _family(family))) and time.monotonic() < deadline:
            family |= left
            for other in left:
                _signal(other, signal.SIGKILL)
            self._reap(name)
            time.sleep(0.1)
        (self.pids / f"{name}.pid").unlink(missing_ok=True)
        return True

    def _reap(self, name: str) -> bool:
        """Collect ``name``'s exit status if this process started it (else it would stay a
        zombie); always True, to sit inside a wait loop's condition."""
        if name in self._children:
            self._children[name].poll()
        return True

    def stop(self, echo=print) -> list[str]:
        """Stop every process start() recorded, newest first, and wait until each process
        group is gone. The data stays. Returns the names that were running."""
        names = [
            n for n in (p.stem for p in self.pids.glob("*.pid")) if n not in self.process_names
        ]
        stopped = []
        for name in [*reversed(self.process_names), *names]:
            if self.stop_process(name):
                stopped.append(name)
        echo(f"cluster: stopped {', '.join(stopped)}" if stopped else "cluster: nothing running")
        return stopped

    def status(self) -> dict[str, int | None]:
        """{process name: PID or None} for every process of the cluster."""
        return {name: self._pid(name) for name in self.process_names}

    def family(self, name: str) -> set[int]:
        """The live processes of ``name`` (its group, descendants and their groups)."""
        pid = self._pid(name)
        return _family({pid}) if pid else set()

    def running_pids(self) -> set[int]:
        """Every live process of the cluster (the recorded ones, their process groups and
        their descendants): what `stop` must leave none of."""
        return _family({pid for pid in self.status().values() if pid})

    # ------------------------------------------------------------------ the REST API

    def api(self) -> Api:
        return Api(self.url, "admin", self.admin_password())


# --------------------------------------------------------------------------- helpers


def _write_private(path: Path, text: str) -> None:
    """Write a secret atomically with mode 600 from its first byte (mkstemp's mode, kept:
    io.atomic_write_text would widen it to the umask's before the rename)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def postgres_bindir() -> Path:
    """Where PostgreSQL's server programs are: Debian keeps them off PATH, under
    /usr/lib/postgresql/<version>/bin (the newest is taken); elsewhere (Homebrew) on PATH."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                    key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)  # fmt: skip
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ClusterError(
        "PostgreSQL's server programs (initdb, postgres) are not installed: `make "
        "airflow-cluster` installs Debian's postgresql with apt-get as root; elsewhere install "
        "them (macOS: brew install postgresql@16)"
    )


def _postgres_user() -> str | None:
    """PostgreSQL refuses to run as root. As root, the server runs as the system user
    ``postgres`` (Debian's package creates it); as anyone else, as that user."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as: "
            "install Debian's postgresql (it creates one) or start the cluster as another user"
        ) from None
    return "postgres"


def _check_traversable(folder: Path, user: str) -> None:
    """The server, running as ``user``, must be able to enter every folder above its own."""
    for parent in folder.resolve().parents:
        if not os.stat(parent).st_mode & 0o001:
            raise ClusterError(
                f"PostgreSQL runs as the user {user!r} (it refuses root), which cannot enter "
                f"{parent}: allow it (chmod o+x {parent}) or choose a state folder elsewhere"
            )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it), for a cluster beside others."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal(pid: int, sig: int) -> None:
    # PermissionError: the number now belongs to another user's process; not ours to stop.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def listening_sockets(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state that one of ``pids`` holds,
    read from /proc (Linux): the cluster's test checks that each address is loopback."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            found.append((inodes[inode], _address(hex_addr, width), int(hex_port, 16)))
    return found


def _address(hex_addr: str, width: int) -> str:
    """/proc/net/tcp's address (little-endian 32-bit words) as text."""
    import ipaddress

    raw = b"".join(bytes.fromhex(hex_addr[i : i + 8])[::-1] for i in range(0, width, 8))
    return str(ipaddress.ip_address(raw))


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbook.cluster",
        description="A distributed Airflow on loopback: PostgreSQL, Redis, CeleryExecutor, "
        "api-server, scheduler, dag-processor, triggerer and Celery workers.",
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--state", help="state folder (default: .airflow-cluster/)")
    parser.add_argument("--workers", type=int, help="Celery workers (default 2, then as last time)")
    parser.add_argument(
        "--manual-only",
        action="store_true",
        help="run only triggered DAG runs, never a DAG's schedule",
    )
    args = parser.parse_args(argv)
    try:
        cluster = Cluster(args.state, workers=args.workers, schedules=not args.manual_only)
        if args.action == "stop":
            cluster.stop()
        elif args.action == "status":
            for name, pid in cluster.status().items():
                print(f"  {name:14} {'pid ' + str(pid) if pid else 'not running'}")
        else:
            print(f"cluster: starting in {paths.show(cluster.state)} "
                  f"({cluster.workers} Celery worker{'s' if cluster.workers > 1 else ''})")  # fmt: skip
            seconds = cluster.start()
            print(f"cluster: up in {seconds:.1f} s")
            print(
                f"cluster: UI at {cluster.url}   user: admin   password: {cluster.admin_password()}"
            )
            print(f"cluster: PostgreSQL on 127.0.0.1:{cluster.ports['postgres']}, "
                  f"Redis on 127.0.0.1:{cluster.ports['redis']}; logs in {paths.show(cluster.logs)}")  # fmt: skip
            print(
                "cluster: stop with 'make airflow-cluster-stop' (the data stays for the next start)"
            )
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
