"""The lock file: hash-pinned, one resolution for every supported platform, and the
environment set-up built is exactly what the lock says for this machine.

These read files only; `make check-platforms` is what asks the registry."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import tomllib

import pytest
from packaging.markers import default_environment
from packaging.utils import canonicalize_name


@pytest.fixture(scope="module")
def lockcheck(repo):
    spec = importlib.util.spec_from_file_location(
        "check_platforms", repo / "scripts" / "check_platforms.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pins(repo, lockcheck):
    return lockcheck.read_lock(repo / "requirements.lock")


# The packages torch needs only for CUDA: Linux wheels, which do not exist for macOS.
LINUX_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def test_every_pin_is_exact_and_hashed(pins):
    assert len(pins) > 250
    for pin in pins:
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", pin.version), pin.name
        assert pin.hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), (
            pin.name
        )


def test_each_platform_gets_one_version_of_each_package(pins, lockcheck):
    for platform in lockcheck.PLATFORMS:
        for python in lockcheck.PYTHONS:
            chosen = lockcheck.pins_for(pins, platform.environment(python))
            versions: dict[str, set[str]] = {}
            for p in chosen:  # `celery` and `celery[redis]` are one package (lock_extras.py)
                versions.setdefault(canonicalize_name(p.name), set()).add(p.version)
            assert all(len(v) == 1 for v in versions.values()), (platform.name, python)
            names = set(versions)
            assert {"torch", "torchvision", "apache-airflow", "papermill"} <= names
            cuda = {n for n in names if LINUX_ONLY.match(n)}
            if platform.sys_platform == "darwin":
                assert not cuda, f"macOS would be asked for Linux-only wheels: {sorted(cuda)}"
            else:
                assert "nvidia-cudnn-cu13" in cuda and "triton" in cuda


def test_direct_dependencies_are_pinned_as_pyproject_says(repo, pins):
    """The lock was resolved from pyproject.toml: every direct dependency is in it, and the
    exact pins (torch, torchvision, Airflow) agree."""
    from packaging.requirements import Requirement

    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    locked = {canonicalize_name(p.name): p.version for p in pins}
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is a dependency in pyproject.toml but not in the lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (name, locked[name])


def test_the_environment_is_the_lock_for_this_machine(pins, lockcheck):
    """What set-up installed into .venv (pip install --require-hashes -r requirements.lock)
    is exactly the lock's pins whose markers hold here: nothing missing, nothing else."""
    wanted = {
        canonicalize_name(p.name): p.version
        for p in lockcheck.pins_for(pins, default_environment())
    }
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    installed.pop("mlops-workbook")  # the project itself, installed editable on top
    installed.pop("pip", None)  # the venv's own installer, not part of the environment
    if installed.get("torch", "").endswith("+cpu"):
        # The README's CPU-only swap on Linux: PyTorch's own CPU build, without the CUDA
        # packages; every other pin as locked.
        wanted = {n: v for n, v in wanted.items() if not LINUX_ONLY.match(n)}
        installed = {n: v.split("+cpu")[0] for n, v in installed.items()}
    assert installed == wanted


def test_an_unhashed_line_is_refused_with_the_file_and_entry(tmp_path, lockcheck):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\nsix==1.17.0 \\\n    --hash=sha256:" + "0" * 64 + "\nnumpy==2.4.6\n")
    with pytest.raises(SystemExit, match=r"requirements.lock: line 4 \(numpy\) must be pinned"):
        lockcheck.read_lock(lock)


def test_markers_decide_per_target(tmp_path, lockcheck):
    lock = tmp_path / "requirements.lock"
    digest = "--hash=sha256:" + "1" * 64
    lock.write_text(
        f"triton==3.8.0 ; sys_platform == 'linux' {digest}\n"
        f"pyyaml-ft==8.0.0 ; python_full_version == '3.13.*' {digest}\n"
        f"six==1.17.0 {digest}\n"
    )
    pins = lockcheck.read_lock(lock)
    mac, linux = lockcheck.PLATFORMS[2], lockcheck.PLATFORMS[0]
    assert [p.name for p in lockcheck.pins_for(pins, mac.environment("3.12.8"))] == ["six"]
    assert [p.name for p in lockcheck.pins_for(pins, linux.environment("3.13.1"))] == [
        "triton", "pyyaml-ft", "six",
    ]  # fmt: skip
    assert (
        lockcheck.pins_for(pins, linux.environment("3.13.1"))[0].line() == f"triton==3.8.0 {digest}"
    )
