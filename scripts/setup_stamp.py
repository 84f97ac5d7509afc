"""The set-up stamp: a sha256 of what decides what is installed in .venv. scripts/setup.sh
compares it with .venv/.workbook-setup and reinstalls only when it differs.

What counts: requirements.lock, pyproject's [project] table (dependencies, console
scripts), its [tool.setuptools] table (which packages the editable install maps) and this
Python's version (the lock installs other wheels for another one). Tool
settings such as ruff's do not count: editing them must not reinstall everything.

Usage: python scripts/setup_stamp.py [project folder, default: the current one]
"""

import hashlib
import json
import sys
import tomllib
from pathlib import Path


def stamp(folder: Path) -> str:
    pyproject = tomllib.loads((folder / "pyproject.toml").read_text())
    digest = hashlib.sha256((folder / "requirements.lock").read_bytes())
    digest.update(json.dumps(pyproject["project"], sort_keys=True).encode())
    setuptools = pyproject.get("tool", {}).get("setuptools", {})
    if setuptools:
        digest.update(json.dumps(setuptools, sort_keys=True).encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


if __name__ == "__main__":
    print(stamp(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
