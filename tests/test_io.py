"""Atomic writes (shared.io): folders replaced in one step, crash leftovers cleaned."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shared import io


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _folder_with(path: Path, name: str) -> None:
    with io.atomic_directory(path) as tmp:
        (tmp / name).write_text(name)


def test_a_folder_is_replaced_whole_and_nothing_is_left_beside_it(tmp_path):
    _folder_with(tmp_path / "run", "first")
    _folder_with(tmp_path / "run", "second")
    assert _listing(tmp_path / "run") == ["second"], "files of the first attempt do not linger"
    assert _listing(tmp_path) == ["run"]


def test_a_failed_write_leaves_the_old_folder_and_no_temporary(tmp_path):
    _folder_with(tmp_path / "run", "good")
    with pytest.raises(RuntimeError), io.atomic_directory(tmp_path / "run") as tmp:
        (tmp / "half").write_text("half")
        raise RuntimeError("crash in the middle")
    assert _listing(tmp_path / "run") == ["good"] and _listing(tmp_path) == ["run"]


@pytest.mark.skipif(sys.platform not in ("linux", "darwin"), reason="exchange is Linux/macOS")
def test_the_swap_is_one_exchange_a_reader_never_finds_the_folder_missing(tmp_path):
    target = tmp_path / "partition"
    _folder_with(target, "v0")
    (tmp_path / "other").mkdir()
    assert io.exchange(target, tmp_path / "other") and _listing(tmp_path / "other") == ["v0"]
    io.exchange(target, tmp_path / "other")  # and back
    missing, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            if not target.is_dir():
                missing.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            _folder_with(target, f"v{i + 1}")
    finally:
        stop.set()
        thread.join()
    assert missing == [] and _listing(target) == ["v200"]


def test_without_exchange_two_renames_still_replace_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "exchange", lambda a, b: False)  # a file system without it
    _folder_with(tmp_path / "run", "first")
    _folder_with(tmp_path / "run", "second")
    assert _listing(tmp_path / "run") == ["second"] and _listing(tmp_path) == ["run"]


def test_leftovers_of_a_crash_are_removed_and_a_running_writers_are_not(tmp_path):
    """A crash between the fallback's two renames leaves `.run.<host>-<pid>.*.old`; a crash
    while writing leaves `.run.<host>-<pid>.*.tmp`. The next call removes both, unless that
    process is still running (a concurrent writer) or ran on another host sharing the
    storage (whose processes this host cannot see: its write may be in progress)."""
    host = io._writer_tag().rsplit("-", 1)[0]
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".run.{host}-{dead.pid}.wxyz.old").mkdir()
    (tmp_path / f".run.{host}-{dead.pid}.abcd.tmp").mkdir()
    (tmp_path / f".run.{host}-{dead.pid}.abcd.tmp" / "half").write_text("half")
    alive = tmp_path / f".run.{host}-{os.getpid()}.live.tmp"  # this process: still writing
    alive.mkdir()
    elsewhere = tmp_path / f".run.other-machine-{dead.pid}.efgh.tmp"  # same pid, other host
    elsewhere.mkdir()
    _folder_with(tmp_path / "run", "new")
    assert _listing(tmp_path) == sorted([alive.name, elsewhere.name, "run"])
    assert _listing(tmp_path / "run") == ["new"]


def test_file_lock_makes_a_second_holder_wait(tmp_path):
    order = []

    def second():
        with io.file_lock(tmp_path / "x.lock"):
            order.append("second")

    with io.file_lock(tmp_path / "x.lock"):
        other = threading.Thread(target=second)
        other.start()
        other.join(timeout=0.5)
        order.append("first")
    other.join(timeout=10)
    assert order == ["first", "second"]
