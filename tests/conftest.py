"""Shared fixtures. Tests never download: the real MNIST files are provisioned by set-up."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

from shared import paths

REPO = Path(__file__).resolve().parent.parent


def make_sandbox(root: Path) -> Path:
    """A project root outside the checkout: configs, solutions and labs linked in, the real
    MNIST linked under data/, an empty dags/. Tasks and notebooks run with WORKBOOK_ROOT
    pointing here write data/, runs/, registry/ and promoted DAGs here, never into the repo."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "MNIST").symlink_to(REPO / "data" / "MNIST")
    (root / "dags").mkdir()
    for name in ("configs", "solutions", "labs"):
        (root / name).symlink_to(REPO / name)
    return root


def pytest_configure(config):
    """Set before anything imports airflow or starts a kernel (both read the environment
    once): a throw-away Airflow home, and a session sandbox as the project root, which the
    nbval kernels inherit."""
    tmp = Path(tempfile.mkdtemp(prefix="workbook-tests-"))
    os.environ["AIRFLOW_HOME"] = str(tmp / "airflow")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ["WORKBOOK_ROOT"] = str(make_sandbox(tmp / "project"))


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    """A fresh project root for one test (see make_sandbox)."""
    root = make_sandbox(tmp_path / "project")
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port():
    """A function returning a loopback port that is free right now."""
    return _free_port
