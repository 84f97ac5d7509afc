"""Airflow inside a notebook: a project-local home, the embedded database, dag.test().

Airflow reads its configuration once, when first imported, so ``configure()`` must run
before anything imports airflow (Lab 1.1 calls it in its first code cell).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared import paths


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
    return {k: os.environ[k] for k in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER")}


def init_db() -> None:
    """Create or upgrade the embedded SQLite metadata database (idempotent, ~5 s)."""
    from airflow.utils import db

    db.initdb()


def load_dag_file(path: str | os.PathLike[str]):
    """Parse one DAG file with Airflow's DagBag; returns the DagBag (check ``import_errors``)."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(path))


def first_import_error(bag) -> str | None:
    """The last line of the first import error in ``bag`` (what a learner needs), or None."""
    if not bag.import_errors:
        return None
    return next(iter(bag.import_errors.values())).strip().splitlines()[-1]


def run_dag(dag, ds: str, conf: dict[str, Any] | None = None) -> dict[str, str]:
    """``dag.test()`` for the logical date ``ds`` (YYYY-MM-DD); returns {task_id: state}.

    Airflow 3's ``dag.test()`` schedules the *serialised* DAG, which it parses from the DAG
    bundle (the dags folder). For the run, the folder of the DAG's own file is that bundle:
    a draft outside dags/ (Lab 1.1) then runs exactly as written, not as whatever copy of
    the same dag_id sits in dags/ (or fails because none does yet).
    """
    from airflow import settings

    logical_date = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    saved = settings.DAGS_FOLDER
    settings.DAGS_FOLDER = str(Path(dag.fileloc).resolve().parent)
    try:
        dag_run = dag.test(logical_date=logical_date, run_conf=conf)
    finally:
        settings.DAGS_FOLDER = saved
    return {
        ti.task_id: str(ti.state)
        for ti in sorted(dag_run.get_task_instances(), key=lambda t: t.task_id)
    }


def promote(draft: str | os.PathLike[str], dags_dir: str | os.PathLike[str] | None = None) -> Path:
    """Publish a checked DAG file into ``dags/`` atomically; refuse it if it does not import.

    The scheduler parses dags/ every few seconds: a half-written or broken file there would
    show up as an import error in the UI, so the file is parsed first and renamed into place.
    """
    from shared.io import atomic_path
    from shared.labs import BEGIN, END

    draft = Path(draft)
    target_dir = Path(dags_dir) if dags_dir else paths.project_root() / "dags"
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / draft.name
        shutil.copyfile(draft, probe)
        bag = load_dag_file(probe)
        error = first_import_error(bag)
        if error:
            raise ValueError(f"{draft.name} does not import, not promoted: {error}")
        if draft.stem not in bag.dag_ids:
            raise ValueError(
                f"{draft.name}: the file name must equal the dag_id (found {bag.dag_ids})"
            )
    # The solution markers are authoring notes for the labs, not part of the published DAG.
    lines = draft.read_text().splitlines(keepends=True)
    published = "".join(line for line in lines if not (BEGIN.match(line) or END.match(line)))
    with atomic_path(target_dir / draft.name) as tmp_target:
        tmp_target.write_text(published)
    return target_dir / draft.name
