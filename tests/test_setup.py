"""Set-up is idempotent: a second call notices nothing changed and installs nothing."""

from __future__ import annotations

import subprocess

import pytest


@pytest.mark.slow
def test_second_setup_is_a_no_op(repo):
    venv = repo / ".venv"
    stamp = venv / ".workbook-setup"
    assert stamp.is_file(), "set-up runs before the tests and leaves its stamp"
    site = next((venv / "lib").glob("python3.*/site-packages"))
    before = (stamp.read_text(), stamp.stat().st_mtime_ns, site.stat().st_mtime_ns)
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "environment up to date" in done.stdout
    assert "verified by sha256" in done.stdout
    assert "installing" not in done.stdout
    assert (stamp.read_text(), stamp.stat().st_mtime_ns, site.stat().st_mtime_ns) == before
    kernel = venv / "share" / "jupyter" / "kernels" / "mlops-workbook" / "kernel.json"
    assert str(venv / "bin" / "python") in kernel.read_text()
    # no "running over TCP without encryption" warning in every papermill-run notebook
    assert "--IPKernelApp.log_level=ERROR" in kernel.read_text()


def test_stamp_is_the_lock_hash(repo):
    """The stamp is keyed on requirements.lock + pyproject's [project] table + the venv's
    Python, so editing the dependencies or entry points re-installs, while editing tool
    settings does not."""
    import hashlib
    import json
    import sys
    import tomllib

    project = json.dumps(
        tomllib.loads((repo / "pyproject.toml").read_text())["project"], sort_keys=True
    )
    want = hashlib.sha256(
        (repo / "requirements.lock").read_bytes() + project.encode() + sys.version.encode()
    ).hexdigest()
    assert (repo / ".venv" / ".workbook-setup").read_text().strip() == want


def test_an_unsupported_python_is_named_with_the_supported_ones(repo, tmp_path):
    """No venv yet and only a Python 3.10: set-up stops before touching anything and says
    which Pythons would do."""
    old = tmp_path / "python3.10"
    old.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.10.14" && exit 0\nexit 1\n')
    old.chmod(0o755)
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=repo, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(old), "VENV": str(venv)},
    )  # fmt: skip
    assert done.returncode == 2
    assert "needs Python 3.11, 3.12 or 3.13; none was found" in done.stderr
    assert f"{old} is Python 3.10.14" in done.stderr
    assert not venv.exists()
