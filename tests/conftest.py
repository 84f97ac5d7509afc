"""Shared fixtures. Tests never download: the real MNIST files are provisioned by set-up."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from shared import paths

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """A throw-away Airflow home for the whole session, set before anything imports airflow
    (Airflow reads its configuration once, at import)."""
    home = Path(tempfile.mkdtemp(prefix="workbook-airflow-"))
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.pop("WORKBOOK_ROOT", None)


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    """A project root in tmp_path: configs, solutions and the real MNIST linked in, so tasks
    and notebooks write data/, runs/ and registry/ there and never into the checkout."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "MNIST").symlink_to(REPO / "data" / "MNIST")
    for name in ("configs", "solutions", "labs", "dags"):
        (root / name).symlink_to(REPO / name)
    monkeypatch.setenv("WORKBOOK_ROOT", str(root))
    return root


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The provisioned data folder; set-up (make test) fetched and verified it before pytest."""
    root = paths.data_root()
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(), (
        "MNIST is not provisioned: run `make setup` (or `workbook data fetch`) first"
    )
    return root
