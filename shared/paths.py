"""Where things live. One place, so notebooks (run from labs/), DAG tasks and the CLI agree.

Nothing here creates a folder (callers create what they write), except scratch_project,
whose whole job is to make one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Environment variable that moves the whole project tree (tests point it at a temporary dir).
ROOT_ENV = "WORKBOOK_ROOT"


def project_root() -> Path:
    """The repository root: ``$WORKBOOK_ROOT`` if set, else the folder above this package.

    The package is installed editable, so ``shared/`` sits in the checkout and its parent is
    the root, whatever the current directory is (a notebook in labs/, an Airflow worker).
    """
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent


def resolve(path: str | os.PathLike[str]) -> Path:
    """An absolute path: relative paths are taken from the project root, not the cwd."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def data_root() -> Path:
    """Where MNIST and the date-partitioned data live (``data/``)."""
    return project_root() / "data"


def runs_root() -> Path:
    """Where training runs and executed notebooks go (``runs/``)."""
    return project_root() / "runs"


def show(path: str | os.PathLike[str]) -> str:
    """``path`` for printing: relative to the project root when inside it, else absolute."""
    p = Path(path).resolve()
    try:
        return p.relative_to(project_root().resolve()).as_posix()
    except ValueError:
        return str(p)


def scratch_project(root: str | os.PathLike[str]) -> Path:
    """Make ``root`` a project folder outside the checkout, for runs that must not write
    into it (tests, benchmarks): ``configs/``, ``solutions/`` and ``labs/`` linked from the
    checkout, its MNIST files linked under ``data/``, a ``dags/`` with no DAG (only the
    checkout's ``.airflowignore``, which says what the dag-processor skips). With
    ``WORKBOOK_ROOT`` pointing there, tasks and notebooks write ``data/``, ``runs/``,
    ``registry/`` and promoted DAGs there."""
    checkout = Path(__file__).resolve().parent.parent
    root = Path(root)
    (root / "data").mkdir(parents=True)
    (root / "data" / "MNIST").symlink_to(checkout / "data" / "MNIST")
    (root / "dags").mkdir()
    shutil.copyfile(checkout / "dags" / ".airflowignore", root / "dags" / ".airflowignore")
    for name in ("configs", "solutions", "labs"):
        (root / name).symlink_to(checkout / name)
    return root
