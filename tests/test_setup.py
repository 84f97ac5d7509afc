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


def test_the_stamp_changes_with_dependencies_not_with_tool_settings(repo, tmp_path):
    """set-up reinstalls when the stamp differs from .venv's: editing the dependencies (or
    the lock) must change it, editing tool settings (ruff's) must not; and the installed
    environment's stamp is the current one (set-up ran on this very checkout)."""
    import subprocess
    import sys

    def stamp(folder):
        done = subprocess.run([sys.executable, str(repo / "scripts" / "setup_stamp.py"), str(folder)],
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout.strip()

    assert (repo / ".venv" / ".workbook-setup").read_text().strip() == stamp(repo)
    for name in ("pyproject.toml", "requirements.lock"):
        (tmp_path / name).write_bytes((repo / name).read_bytes())
    base = stamp(tmp_path)
    pyproject = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(
        pyproject.replace("line-length = 100", "line-length = 99")
    )
    assert stamp(tmp_path) == base, "a ruff setting is no reason to reinstall"
    (tmp_path / "pyproject.toml").write_text(pyproject.replace('"tqdm>=4.66"', '"tqdm>=4.67"'))
    assert stamp(tmp_path) != base, "a changed dependency reinstalls"
    (tmp_path / "pyproject.toml").write_text(pyproject)
    with open(tmp_path / "requirements.lock", "a") as f:
        f.write("# a new pin\n")
    assert stamp(tmp_path) != base, "a changed lock reinstalls"


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


def test_clean_and_stop_work_on_a_fresh_clone_and_twice(repo, tmp_path):
    """`make clean` on a clone where `make airflow` never ran (no PID files, no .venv), and
    `airflow-stop` twice in a row: each exits 0 and removes what it should."""
    import shutil

    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(repo / "Makefile", clone / "Makefile")
    shutil.copytree(repo / "scripts", clone / "scripts")
    (clone / "runs" / "old").mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for target in ("airflow-stop", "airflow-stop", "clean"):
        done = subprocess.run(["make", "-s", target], cwd=clone, env=env, capture_output=True,
                              text=True)  # fmt: skip
        assert done.returncode == 0, f"make {target}: {done.stdout}{done.stderr}"
        assert "airflow: nothing running" in done.stdout
    assert not (clone / "runs").exists()
