"""Shared fixtures. Tests never download: the real MNIST files are provisioned by set-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import paths

REPO = Path(__file__).resolve().parent.parent


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
