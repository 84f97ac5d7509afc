#!/usr/bin/env python3
"""Ask the registry whether requirements.lock installs on every platform the course supports.

For each (platform, Python) pair this runs pip's own finder and resolver in dry-run mode
against the lock (``--no-deps``: the lock already pins every dependency, so each line must
find its own wheel), binary wheels only, with every hash required, and prints one line: ok,
or the first package that has no wheel there. Nothing is installed; pip fetches only index pages and
wheel metadata. Run it with `make check-platforms` (`make lock` runs it after locking).

pip evaluates environment markers (`; sys_platform == "linux"`) against the machine it runs
on, not against `--platform`, so on Linux it would ask for the CUDA wheels on macOS too.
This script therefore evaluates each line's marker for the target itself (packaging's
marker evaluator, the one pip uses) and hands pip only the lines that target installs.

    python scripts/check_platforms.py [--lock requirements.lock] [--sizes] [--only linux-x86_64]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import mac_platforms

ROOT = Path(__file__).resolve().parent.parent
# The Pythons the course supports: pyproject's requires-python (>=3.11,<3.14). Full versions,
# because markers may compare them: the lock pins soupsieve 2.10 below 3.11.5 and 4.1.3 from
# it on, so both sides of that line are checked.
PYTHONS = ("3.11.4", "3.11.9", "3.12.8", "3.13.1")


@dataclass(frozen=True)
class Platform:
    name: str
    sys_platform: str
    machine: str
    tags: tuple[str, ...]  # every wheel platform tag this platform accepts, newest first

    def environment(self, python: str) -> dict[str, str]:
        """The marker environment of CPython `python` on this platform."""
        return {
            "implementation_name": "cpython",
            "implementation_version": python,
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": {"linux": "Linux", "darwin": "Darwin"}[self.sys_platform],
            "platform_version": "",
            "python_full_version": python,
            "python_version": ".".join(python.split(".")[:2]),
            "sys_platform": self.sys_platform,
        }


def _manylinux(arch: str) -> tuple[str, ...]:
    # pip does not widen --platform to older compatible tags, so name them all: glibc 2.28
    # (what torch's wheels need, e.g. Ubuntu 20.04+, Debian 11+) down to the legacy aliases.
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(28, 4, -1)]
    tags += [f"manylinux2014_{arch}"]
    if arch == "x86_64":
        tags += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    return tuple(tags)


PLATFORMS = (
    Platform("linux-x86_64", "linux", "x86_64", _manylinux("x86_64")),
    Platform("linux-aarch64", "linux", "aarch64", _manylinux("aarch64")),
    # macOS 14 (Sonoma) on Apple silicon is the floor: torch 2.14's wheels are macosx_14_0.
    # packaging lists the tags pip itself would accept there (arm64 and universal2).
    Platform("macos-arm64", "darwin", "arm64", tuple(mac_platforms((14, 0), "arm64"))),
)


@dataclass
class Pin:
    name: str
    version: str
    marker: Marker | None
    hashes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The pin for pip, without its marker (already decided), with all its hashes."""
        return " ".join([f"{self.name}=={self.version}", *(f"--hash={h}" for h in self.hashes)])


def read_lock(path: Path) -> list[Pin]:
    """Every pin of a hash-pinned requirements file; an entry that is not `name==version`
    with hashes is an error naming the file and the line it starts on."""
    entries: list[tuple[int, str]] = []  # (first line number, the entry joined)
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if pending is None and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        start, text = pending or (number, "")
        text += " " + raw.rstrip().removesuffix("\\")
        pending = (start, text) if raw.rstrip().endswith("\\") else None
        if pending is None:
            entries.append((start, text.split(" #", 1)[0].strip()))
    pins = []
    for number, entry in entries:
        spec, *options = re.split(r"\s+(?=--)", entry)
        requirement = Requirement(spec)
        versions = [s.version for s in requirement.specifier if s.operator == "=="]
        hashes = [o.split("=", 1)[1] for o in options if o.startswith("--hash=")]
        if len(versions) != 1 or not hashes:
            raise SystemExit(
                f"{path}: line {number} ({requirement.name}) must be pinned with == and "
                "carry --hash options; regenerate the lock with `make lock`"
            )
        pins.append(Pin(requirement.name, versions[0], requirement.marker, hashes))
    return pins


def pins_for(pins: list[Pin], environment: dict[str, str]) -> list[Pin]:
    """The pins a target installs: those whose marker holds in its environment."""
    return [p for p in pins if p.marker is None or p.marker.evaluate(environment)]


def first_missing(pip_output: str) -> str:
    """The package pip could not find a wheel for, from its error text."""
    match = re.search(r"satisfies the requirement (\S+)", pip_output)
    if match:
        return f"no wheel for {match.group(1)}"
    match = re.search(r"THESE PACKAGES DO NOT MATCH THE HASHES.*?\n\s*(\S+)", pip_output, re.S)
    if match:
        return f"hash mismatch for {match.group(1)}"
    errors = [line for line in pip_output.splitlines() if line.startswith("ERROR")]
    return errors[0] if errors else pip_output.strip().splitlines()[-1]


@cache
def wheel_sizes(project: str) -> dict[str, int]:
    """Every file of a project on PyPI with its size, from the JSON simple index (PEP 691)."""
    request = urllib.request.Request(
        f"https://pypi.org/simple/{project}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return {f["filename"]: f.get("size") or 0 for f in json.load(response)["files"]}


def download_bytes(urls: list[str]) -> int:
    """Sum of the wheels' sizes (what a fresh install downloads)."""
    total = 0
    for url in urls:
        filename = url.rsplit("/", 1)[-1].split("#", 1)[0]
        project = re.sub(r"[-_.]+", "-", filename.split("-", 1)[0]).lower()
        total += wheel_sizes(project).get(filename, 0)
    return total


def wrong_python(installs: list[dict], python: str) -> str | None:
    """The first wheel whose Requires-Python excludes `python`. pip's dry run compares some
    of these with the Python it runs on instead of --python-version, so it is told to
    ignore them and they are checked here, from the metadata pip reports."""
    for item in installs:
        metadata = item["metadata"]
        wanted = metadata.get("requires_python")
        if wanted and python not in SpecifierSet(wanted):
            return f"{metadata['name']}=={metadata['version']} requires Python {wanted}"
    return None


def check(platform: Platform, python: str, pins: list[Pin], sizes: bool) -> tuple[bool, str]:
    chosen = pins_for(pins, platform.environment(python))
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp, "requirements.txt")
        # dict.fromkeys: `celery[redis]==v` and `celery==v` make the same line here (extras
        # only matter when dependencies are resolved, which --no-deps does not).
        lines = dict.fromkeys(p.line() for p in chosen)
        requirements.write_text("\n".join(lines) + "\n", encoding="utf-8")
        report = Path(tmp, "report.json")
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
            "--disable-pip-version-check", "--ignore-installed", "--no-deps",
            "--only-binary=:all:", "--require-hashes", "--python-version", python,
            "--ignore-requires-python",
            "--implementation", "cp", "--target", str(Path(tmp, "target")),
            "--report", str(report), "-r", str(requirements),
        ]  # fmt: skip
        for tag in platform.tags:
            command += ["--platform", tag]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            return False, first_missing(done.stderr + done.stdout)
        installs = json.loads(report.read_text())["install"]
        problem = wrong_python(installs, python)
        if problem:
            return False, problem
        summary = f"{len(installs)} wheels"
        if sizes:
            size = download_bytes([i["download_info"]["url"] for i in installs])
            summary += f", {size / 1e9:.2f} GB to download"
        return True, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    parser.add_argument("--sizes", action="store_true", help="also sum the wheels' sizes")
    parser.add_argument("--only", choices=[p.name for p in PLATFORMS], action="append")
    args = parser.parse_args(argv)
    pins = read_lock(args.lock)
    print(f"{args.lock.name}: {len(pins)} pins, asking pip's resolver (dry run, wheels only)")
    pairs = [
        (platform, python)
        for platform in PLATFORMS
        if not args.only or platform.name in args.only
        for python in PYTHONS
    ]
    # Each dry run is one pip process, busy on a core for half a minute: run them side by
    # side and print in the table's order.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(lambda pair: check(*pair, pins, args.sizes), pairs)
        failed = 0
        for (platform, python), (ok, detail) in zip(pairs, results, strict=True):
            failed += not ok
            label = f"{platform.name:<14} Python {python:<7}"
            print(f"{label} {'ok  ' if ok else 'FAIL'} {detail}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
