"""Airflow inside a notebook: a project-local home, the embedded database, dag.test().

Airflow reads its configuration once, when first imported, so ``configure()`` must run
before anything imports airflow (Lab 1.1 calls it in its first code cell).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared import paths
from shared.io import atomic_path

#: What pathspec says of the pattern class Airflow 3.3 reads .airflowignore's globs with.
_PATHSPEC_DEPRECATION = r"GitWildMatchPattern \('gitwildmatch'\)"


def configure() -> dict[str, str]:
    """Point Airflow at the project (unless the environment already does) and return the
    settings in force: ``AIRFLOW_HOME`` = ``.airflow/`` (SQLite database, logs), DAGs from
    ``dags/``, no example DAGs. ``make lab`` and the tests set these before the kernel starts.
    """
    root = paths.project_root()
    os.environ.setdefault("AIRFLOW_HOME", str(root / ".airflow"))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(root / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    # dag.test() logs every step at INFO into the cell; warnings and errors are what a
    # learner needs to see there (the full logs stay in the UI and in AIRFLOW_HOME/logs).
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    # Airflow 3.3 runs dag.test()'s task API in-process through FastAPI's TestClient, whose
    # import warns that httpx is deprecated there. It is Airflow's dependency, not the
    # learner's code, and nothing they can act on: keep it out of their cell output.
    warnings.filterwarnings(
        "ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated"
    )
    # Every edit of a DAG file stores a new serialised version of it; Airflow 3.3's
    # DagRun.serialized_dag relationship then warns (SQLAlchemy) that it found several. The
    # run uses the right version; the warning is Airflow's internals, not the learner's DAG.
    warnings.filterwarnings(
        "ignore", message=r"Multiple rows returned with uselist=False for lazily-loaded attribute"
    )
    # Airflow 3.3 reads dags/.airflowignore's glob patterns with a pattern class that its
    # own dependency, pathspec, now calls deprecated: Airflow's to change, not the learner's.
    warnings.filterwarnings("ignore", message=_PATHSPEC_DEPRECATION)
    return {k: os.environ[k] for k in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER")}


def init_db() -> None:
    """Create or upgrade the embedded SQLite metadata database (idempotent, ~5 s)."""
    from airflow.utils import db

    db.initdb()


def load_dag_file(path: str | os.PathLike[str]):
    """Parse one DAG file with Airflow's DagBag; returns the DagBag (check ``import_errors``)."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(path))


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')


#: The line of a traceback that names the exception: ``ModuleNotFoundError: No module ...``.
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Timeout|Interrupt|Exit)\b.*?:")


def exception_lines(text: str) -> list[str]:
    """The lines of ``text`` (a log, a command's stderr; colour codes ignored) that name an
    exception, in order: ``OSError: the disk is busy``."""
    return [line for line in _ANSI.sub("", text).splitlines() if _EXCEPTION.match(line)]


def format_import_error(path: str | os.PathLike[str], text: str) -> str:
    """An import error as a learner needs it: the DAG file, the line in it where the error
    happened, that line's code, then the error itself (the exception's line and what
    follows it), with the file's folder and the process id left out::

        broken_dag.py, line 4: from airflow.utils.dates import days_ago
        ModuleNotFoundError: No module named 'airflow.utils.dates'
    """
    name = Path(path).name
    lines = text.strip().splitlines()
    where = f"{name}: "
    for i, line in enumerate(lines):
        frame = _FRAME.match(line)
        if frame and Path(frame["file"]).name == name:
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            where = f"{name}, line {frame['line']}: {code}\n"
    # A parse stopped by the import timeout may go on to fail inside the library it was
    # importing (a chained exception): the timeout is what went wrong, so it is the error.
    starts = [i for i, line in enumerate(lines) if "DagBag import timeout" in line]
    starts = starts or [i for i, line in enumerate(lines) if _EXCEPTION.match(line)]
    error = "\n".join(lines[starts[-1] :] if starts else lines[-1:])
    error = re.sub(r"(?:/[^\s/]+)+/" + re.escape(name), name, error)
    return where + re.sub(r",? PID: \d+", "", error)


def first_import_error(bag) -> str | None:
    """The first import error in ``bag`` (``format_import_error``), or None."""
    if not bag.import_errors:
        return None
    path, text = next(iter(bag.import_errors.items()))
    return format_import_error(path, text)


def parse_in_fresh_process(
    path: str | os.PathLike[str], import_timeout: float | None = None, raw: bool = False
) -> str | None:
    """Parse one DAG file as the dag-processor does, in a fresh Python process where nothing
    is imported yet, with ``[core] dagbag_import_timeout`` set to ``import_timeout`` seconds
    when given (30 by default); the first import error (``format_import_error``), or None.
    In a notebook kernel, a module such as torch stays imported after its first import,
    so only a fresh process shows what a parse costs. ``raw``: the whole error as Airflow
    recorded it (its traceback), instead of the lines a learner needs."""
    import json

    probe = (
        "import json, sys; from airflow.dag_processing.dagbag import DagBag; "
        "b = DagBag(dag_folder=sys.argv[1]); print(json.dumps(b.import_errors))"
    )
    env = dict(os.environ)
    if import_timeout is not None:
        env["AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT"] = str(import_timeout)
    done = subprocess.run(
        [sys.executable, "-c", probe, str(path)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    if done.returncode != 0:
        # The import timeout's alarm can go off just as the parse ends, outside the code that
        # records it as an import error: the process dies of it. It is the same report.
        stopped = [line for line in done.stderr.splitlines() if "DagBag import timeout" in line]
        if not stopped:
            raise RuntimeError(f"parsing {path} failed: {done.stderr.strip()[-500:]}")
        text = done.stderr.strip() if raw else stopped[-1].strip()
        return text if raw else format_import_error(path, text)
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    if not errors:
        return None
    text = next(iter(errors.values()))
    return text if raw else format_import_error(path, text)


def imported_when_parsed(path: str | os.PathLike[str], modules: Sequence[str]) -> list[str]:
    """Which of ``modules`` (top-level names) a parse of the DAG file at ``path`` imports, in a
    fresh process as the dag-processor parses: what every parse pays for, measured without
    a clock (a timeout judges the same thing, but a busy machine moves it)."""
    import json

    probe = (
        "import json, sys; from airflow.dag_processing.dagbag import DagBag; "
        "before = set(sys.modules); DagBag(dag_folder=sys.argv[1]); "
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"parsing {path} failed: {done.stderr.strip()[-500:]}")
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    return [m for m in modules if m in loaded]


def parse_seconds(*dag_files: str | os.PathLike[str]) -> dict[str, float]:
    """How long Airflow's DagBag takes to parse each file, each measured in a fresh Python
    process, as the dag-processor parses each file in a child process of its own.

    A fresh process matters: in a notebook kernel, a module such as torch stays imported
    after its first import, so a second measurement there would wrongly show no cost.
    Returns {file as given: seconds}; RuntimeError names a file that does not import.
    """
    probe = (
        "import sys; from airflow.dag_processing.dagbag import DagBag; "
        "b = DagBag(dag_folder=sys.argv[1]); assert not b.import_errors, b.import_errors; "
        "print(b.dagbag_stats[0].duration.total_seconds())"
    )
    times = {}
    for f in dag_files:
        done = subprocess.run(
            [sys.executable, "-c", probe, str(f)], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"parsing {f} failed: {done.stderr.strip()[-500:]}")
        times[str(f)] = float(done.stdout.strip().splitlines()[-1])
    return times


def setting(section: str, key: str) -> str:
    """One Airflow setting as Airflow itself resolves it (defaults, airflow.cfg, then
    AIRFLOW__SECTION__KEY variables): what `airflow config get-value` prints."""
    from airflow.configuration import conf

    return conf.get(section, key)


def schedule_preview(
    schedule: str, start_date: datetime, n: int = 3, interval_timetable: bool = False
) -> list[dict[str, str]]:
    """The first ``n`` runs a DAG with this schedule would get from ``start_date`` on, as
    Airflow's own timetable computes them (catchup on): logical date, data interval, and
    when the run may start. ``interval_timetable=True`` uses CronDataIntervalTimetable, the
    Airflow 2 behaviour (``[scheduler] create_cron_data_intervals = True``)."""
    import pendulum
    from airflow.sdk import DAG
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.interval import CronDataIntervalTimetable

    start = pendulum.instance(start_date if start_date.tzinfo else start_date.replace(tzinfo=UTC))
    if interval_timetable:
        timetable = CronDataIntervalTimetable(schedule, timezone="UTC")
    else:
        dag = DAG("schedule_preview", schedule=schedule, start_date=start, catchup=True)
        timetable = coerce_to_core_timetable(dag.timetable)
    fmt = "%Y-%m-%d %H:%M"
    return [
        {
            "logical_date": info.logical_date.strftime(fmt),
            "data_interval": f"{info.data_interval.start.strftime(fmt)} → "
                             f"{info.data_interval.end.strftime(fmt)}",
            "runs_at": info.run_after.strftime(fmt),
        }
        for info in _next_runs(timetable, start, n)
    ]  # fmt: skip


def _next_runs(timetable, start, n: int) -> list:
    """The first ``n`` runs (DagRunInfo) ``timetable`` schedules from ``start`` on, catchup on."""
    from airflow.timetables.base import TimeRestriction

    restriction = TimeRestriction(earliest=start, latest=None, catchup=True)
    runs, last = [], None
    while len(runs) < n:
        info = timetable.next_dagrun_info(
            last_automated_data_interval=last, restriction=restriction
        )
        if info is None:
            break
        runs.append(info)
        last = info.data_interval
    return runs


def cron_times(expression: str, after: datetime, n: int) -> list[datetime]:
    """The next ``n`` times a cron ``expression`` fires from ``after`` on (UTC), computed by
    Airflow's own cron timetable (``CronTriggerTimetable``: what ``schedule="..."`` means in
    Airflow 3); ValueError, with the reason, if Airflow does not accept the expression."""
    import pendulum
    from airflow.sdk.exceptions import AirflowTimetableInvalid
    from airflow.timetables.trigger import CronTriggerTimetable

    try:
        timetable = CronTriggerTimetable(expression, timezone="UTC")
        timetable.validate()
    except (AirflowTimetableInvalid, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{expression!r} is not a cron expression Airflow accepts: {exc}"
        ) from None
    start = pendulum.instance(after if after.tzinfo else after.replace(tzinfo=UTC))
    return [info.run_after for info in _next_runs(timetable, start, n)]


def cron_description(expression: str) -> str:
    """Airflow's plain-English reading of a cron expression ("At 02:30, Monday through
    Friday"), as the UI shows it next to the schedule."""
    from airflow.timetables.trigger import CronTriggerTimetable

    return CronTriggerTimetable(expression, timezone="UTC").description


def run_dag(
    dag, ds: str | None, conf: dict[str, Any] | None = None, tries: bool = False
) -> dict[str, str] | dict[str, tuple[str, int]]:
    """``dag.test()`` for the logical date ``ds`` (YYYY-MM-DD), or None for a run without one
    (as a manual trigger without a date, or a run an asset started); returns {task_id:
    state}, or with ``tries`` {task_id: (state, try number)}: a task that failed once and
    passed on its retry ends as ("success", 2). Retries happen at once, without their
    ``retry_delay``.

    Airflow 3's ``dag.test()`` schedules the *serialised* DAG, which it parses from the DAG
    bundle (the dags folder). For the run, the folder of the DAG's own file is that bundle:
    a draft outside dags/ (Lab 1.1) then runs exactly as written, not as whatever copy of
    the same dag_id sits in dags/ (or fails because none does yet).
    """
    from datetime import timedelta

    from airflow import settings

    # dag.test() waits out each retry_delay in this process (300 s by default), printing a
    # warning every second; in a notebook a retry should happen at once. Only the delay
    # changes, and only for this run: a task still gets exactly the retries its DAG gives it.
    delays = {task.task_id: task.retry_delay for task in dag.tasks}
    for task in dag.tasks:
        task.retry_delay = timedelta(0)
    logical_date = datetime.fromisoformat(ds).replace(tzinfo=UTC) if ds else None
    saved = settings.DAGS_FOLDER
    settings.DAGS_FOLDER = str(Path(dag.fileloc).resolve().parent)
    # After a task fails, dag.test() warns once a second that the tasks behind it cannot run
    # ("No tasks to run. unrunnable tasks: {...}"), until it gives up: the states returned
    # say the same in one line each.
    test_log = logging.getLogger("airflow.sdk.definitions.dag")
    level = test_log.level
    test_log.setLevel(logging.ERROR)
    try:
        dag_run = dag.test(logical_date=logical_date, run_conf=conf)
    finally:
        test_log.setLevel(level)
        settings.DAGS_FOLDER = saved
        for task in dag.tasks:
            task.retry_delay = delays[task.task_id]
    return {
        ti.task_id: (str(ti.state), ti.try_number) if tries else str(ti.state)
        for ti in sorted(dag_run.get_task_instances(), key=lambda t: t.task_id)
    }


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: A line of Airflow's own logging (a timestamp, then a level), or a traceback's frame.
_LOG_NOISE = re.compile(r"^\d{4}-\d\d-\d\dT\S+ \[|^\s+|^Traceback \(most recent call last\):")


def recorded_states(dag_id: str, ds: str) -> dict[str, str]:
    """{task_id: state} of the latest run of ``dag_id`` for the logical date ``ds``, as
    Airflow's database records it (what the UI's grid shows); {} when it holds none. A
    grader reads this, not what a notebook says its run did."""
    from airflow.models import DagRun, TaskInstance
    from airflow.utils.session import create_session

    day = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    with create_session() as session:
        run = (
            session.query(DagRun)
            .filter(DagRun.dag_id == dag_id, DagRun.logical_date == day)
            .order_by(DagRun.id.desc())
            .first()
        )
        if run is None:
            return {}
        tis = session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id
        )
        return {ti.task_id: str(ti.state) for ti in sorted(tis, key=lambda t: t.task_id)}


def run_dag_logged(dag, ds: str | None, conf: dict[str, Any] | None = None):
    """``run_dag`` with tries, and the task log it printed, as plain text (no colour codes):
    ({task_id: (state, try)}, log)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        tries = run_dag(dag, ds, conf, tries=True)
    return tries, _ANSI.sub("", out.getvalue())


def log_lines_that_matter(log: str) -> list[str]:
    """What a task printed and the exception that ended a try, without Airflow's own log
    lines and the traceback's frames: the lines a learner reads first."""
    return [line for line in log.splitlines() if line.strip() and not _LOG_NOISE.match(line)]


#: The course's solution notebooks mark each exercise with comment lines such as
#: ``### BEGIN SOLUTION (...)`` and ``### HINT ...`` (the grammar is ``workbook.labs``'s).
#: They are notes for the course's authors, never part of a published DAG; nor are the
#: commented-out lines after ``### LAB STARTS WITH`` or ``### LAB SHOWS`` (what the lab shows
#: instead of the answer), up to the region's ``### END SOLUTION``.
AUTHORING_LINE = re.compile(
    r"^[ \t]*### (?:BEGIN SOLUTION|END SOLUTION|HINT|POINTER|LAB SHOWS|LAB STARTS WITH|ANSWER)\b"
)
_LAB_VERSION = re.compile(r"^[ \t]*### (?:LAB SHOWS|LAB STARTS WITH)\b")
_END = re.compile(r"^[ \t]*### END SOLUTION\b")


def without_authoring_lines(source: str) -> str:
    """``source`` without its authoring lines (what ``promote`` publishes)."""
    kept, lab_version = [], False
    for line in source.splitlines(keepends=True):
        if _LAB_VERSION.match(line):
            lab_version = True
        elif _END.match(line):
            lab_version = False
        if not (lab_version or AUTHORING_LINE.match(line)):
            kept.append(line)
    return "".join(kept)


def dag_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The Python files of ``folder`` that the dag-processor parses: all of them but those
    its ``.airflowignore`` names (a module the DAGs import, such as Lab 1.4's trainer)."""
    from airflow.utils.file import list_py_file_paths

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PATHSPEC_DEPRECATION)
        return sorted(Path(p) for p in list_py_file_paths(str(folder), safe_mode=False))


def _skipped_by_dag_processor(dags_dir: Path, name: str) -> bool:
    """Whether ``dags_dir``'s ``.airflowignore`` makes the dag-processor skip a file called
    ``name`` (asked of Airflow's own reader, in an empty folder with a copy of the file)."""
    ignore = dags_dir / ".airflowignore"
    if not ignore.is_file():
        return False
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(ignore, Path(tmp) / ".airflowignore")
        (Path(tmp) / name).write_text("")
        return not dag_files(tmp)


def promote(draft: str | os.PathLike[str], dags_dir: str | os.PathLike[str] | None = None) -> Path:
    """Publish a checked DAG file into ``dags/`` atomically; refuse it if it does not import.

    The dag-processor re-parses every file in dags/ (each at most every
    ``[dag_processor] min_file_process_interval``, 30 s by default): a half-written or broken
    file there would show up as an import error in the UI, so the file is parsed first and
    renamed into place. A module the DAGs load (Lab 1.4's ``my_trainer.py``), which
    ``dags/.airflowignore`` keeps the dag-processor from parsing, is published the same way
    once it compiles: what it does is checked where it runs.
    """
    draft = Path(draft)
    target_dir = Path(dags_dir) if dags_dir else paths.project_root() / "dags"
    module = _skipped_by_dag_processor(target_dir, draft.name)
    if module:
        try:
            compile(draft.read_text(), draft.name, "exec")
        except SyntaxError as exc:
            raise ValueError(f"{draft.name} does not compile, not promoted: {exc}") from None
    else:
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / draft.name
            shutil.copyfile(draft, probe)
            bag = load_dag_file(probe)
            error = first_import_error(bag)
            if error:
                raise ValueError(f"{draft.name} does not import, not promoted: {error}")
            if draft.stem not in bag.dag_ids:
                raise ValueError(
                    f"{draft.name}: the file name must equal the dag_id (found {bag.dag_ids}); "
                    "a module that holds no DAG must be named in dags/.airflowignore"
                )
    where = paths.show(draft)
    header = (
        f"# Promoted from {where} by shared.airflow_local.promote: edit what writes that draft\n"
        f"# (the notebook's {'cell that writes it' if module else 'DAG cell'}), then promote "
        "again; an edit here is replaced.\n"
    )
    published = header + without_authoring_lines(draft.read_text())
    with atomic_path(target_dir / draft.name) as tmp_target:
        tmp_target.write_text(published)
    return target_dir / draft.name


def scheduler_alive() -> bool:
    """Whether a scheduler is running against this Airflow's database (``make airflow``'s):
    a scheduler job that is running and whose last heartbeat is recent."""
    from airflow.jobs.job import Job
    from airflow.utils.session import create_session

    with create_session() as session:
        jobs = session.query(Job).filter(Job.job_type == "SchedulerJob", Job.state == "running")
        return any(job.is_alive() for job in jobs)


def _paused(dag_id: str) -> bool:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = session.query(DagModel).filter(DagModel.dag_id == dag_id).one_or_none()
        return dag is None or bool(dag.is_paused)


_PLANNED_DATE = re.compile(r"^\|\s*(\d{4}-\d\d-\d\d)[ T]\d\d:\d\d:\d\d", re.MULTILINE)


def backfill(
    dag_id: str,
    from_date: str,
    to_date: str,
    reprocess: str = "none",
    dry_run: bool = False,
    timeout: float = 900,
) -> list[str] | dict[str, str]:
    """Airflow 3's own backfill: ``airflow backfill create --dag-id ... --from-date ...
    --to-date ... --reprocess-behavior ...``, run as a learner would in a terminal.

    With ``dry_run``, the logical dates it would create runs for (a date that already has a
    run is left alone unless ``reprocess`` says otherwise). Otherwise it creates the
    backfill, whose runs the scheduler executes (``make airflow``; without one they would
    wait for ever, so this refuses), waits for them, and returns ``{ds: state}``.
    """
    import time

    if not dry_run and not scheduler_alive():
        raise RuntimeError(
            "no scheduler is running for this Airflow: start `make airflow` in a terminal at "
            "the project root (it prints when it is ready), then run this again"
        )
    if not dry_run and _paused(dag_id):
        raise RuntimeError(
            f"{dag_id} is paused, and the scheduler starts no run of a paused DAG, a "
            "backfill's included: switch it on (its toggle in the UI, or `airflow dags "
            f"unpause {dag_id}` in a terminal), then run this again"
        )
    command = [str(Path(sys.executable).parent / "airflow"), "backfill", "create",
               "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date,
               "--reprocess-behavior", reprocess, *(["--dry-run"] if dry_run else [])]  # fmt: skip
    # A kernel's environment asks for colour (Rich then paints every digit of a date):
    # plain text, as in a terminal piped to a file.
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("FORCE_COLOR", None)
    for attempt in range(1, 4):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        # SQLite takes one writer at a time: a scheduler busy writing can make the command's
        # insert time out ("database is locked"), and Airflow then removes the half-made
        # backfill "so the user can retry". So do we, twice, a moment later.
        if done.returncode == 0 or "database is locked" not in done.stderr or attempt == 3:
            break
        time.sleep(3 * attempt)
    if done.returncode != 0:
        errors = exception_lines(done.stderr)
        lines = [line for line in _ANSI.sub("", done.stderr).splitlines() if line.strip()]
        why = errors[-1][:300] if errors else " | ".join(lines[-3:])
        raise RuntimeError(f"{' '.join(command[1:])} failed: {why}")
    if dry_run:
        return _PLANNED_DATE.findall(_ANSI.sub("", done.stdout))
    return _wait_for_backfill(dag_id, timeout)


def _wait_for_backfill(dag_id: str, timeout: float) -> dict[str, str]:
    """The states of the newest backfill's runs of ``dag_id``, once none is queued or running."""
    import time

    deadline = time.monotonic() + timeout
    from airflow.models.backfill import Backfill
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    while True:
        with create_session() as session:
            newest = (session.query(Backfill).filter(Backfill.dag_id == dag_id)
                      .order_by(Backfill.id.desc()).first())  # fmt: skip
            runs = session.query(DagRun).filter(DagRun.backfill_id == newest.id).all()
            states = {run.logical_date.date().isoformat(): str(run.state) for run in runs}
        if states and all(s in ("success", "failed") for s in states.values()):
            return dict(sorted(states.items()))
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the backfill of {dag_id} is not done after {timeout:.0f} s: {states}"
            )
        time.sleep(2)


def asset_events(name: str) -> list[dict[str, Any]]:
    """The events of the asset ``name``, oldest first: when, which DAG run made each, and
    the ``extra`` dict it carries (what a task with the asset in its inlets reads)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.name == name).order_by(AssetEvent.timestamp, AssetEvent.id))  # fmt: skip
        return [{"timestamp": e.timestamp, "source_dag_id": e.source_dag_id,
                 "source_run_id": e.source_run_id, "extra": e.extra} for e in rows]  # fmt: skip


def clear_asset_events(name: str) -> int:
    """Delete every event of the asset ``name`` (a lab starting its story again: a DAG that
    reads the asset's events then sees only this run's); returns how many there were."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        ids = [a.id for a in session.query(AssetModel).filter(AssetModel.name == name)]
        events = session.query(AssetEvent).filter(AssetEvent.asset_id.in_(ids))
        return events.delete(synchronize_session=False)
