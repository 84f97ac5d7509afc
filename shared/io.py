"""Atomic writes: a reader sees the old file or the new one, never half of one.

Everything that matters (data files, checkpoints, metrics, partitions) is written through
these helpers: write to a temporary name in the same folder, then ``os.replace`` it into
place, which is atomic on POSIX and Windows. A crash or an exception leaves no partial file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: reading it means setting it, and a thread writing a file while
# another had it set to 0 would create a world-writable file (grading writes from threads).
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (stable diffs) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


def exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap two existing paths in one step, where the kernel offers it: Linux's
    ``renameat2(RENAME_EXCHANGE)`` (glibc 2.28+), macOS's ``renamex_np(RENAME_SWAP)``.
    Returns False where neither is available or the file system refuses (the caller then
    falls back to two renames)."""
    import ctypes
    import errno
    import sys

    libc = _libc()
    src, dst = os.fsencode(a), os.fsencode(b)
    if libc is not None and sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(at_fdcwd, src, at_fdcwd, dst, rename_exchange)
    elif libc is not None and sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 0x2
        fn = libc.renamex_np
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(src, dst, rename_swap)
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # a file system (or kernel) without the call: the fallback does it
    raise OSError(err, os.strerror(err), os.fsdecode(src), None, os.fsdecode(dst))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_tag() -> str:
    """This writer, as its temporaries name it: host and process id. On storage several
    machines share, a process id alone would name another host's writer as well."""
    import socket

    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def _remove_stale(target: Path) -> None:
    """Leftovers of an ``atomic_directory`` that crashed on this host: ``.<name>.<host>-<pid>.*``
    (a temporary folder, or ``old`` one a fallback swap had moved aside) whose process is
    gone. A temporary of a writer still running, or of another host (whose processes this
    one cannot see), is left alone."""
    here = _writer_tag().rsplit("-", 1)[0]
    for entry in target.parent.glob(f".{target.name}.*"):
        writer = entry.name[len(target.name) + 2 :].split(".", 1)[0]
        host, _, pid = writer.rpartition("-")
        stale = host == here and pid.isdigit() and not _pid_alive(int(pid))
        if stale and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces the folder ``path``.

    Used for partitions and run folders: a rerun replaces the whole folder, so files from an
    earlier attempt never linger beside the new ones (idempotency without duplicates).

    Replacing a folder that exists is one atomic exchange where the kernel offers it
    (``exchange``: Linux, macOS), so a reader always finds either the old folder or the new
    one. Elsewhere it is two renames (old aside, new in), with a moment in which ``path`` is
    missing. Leftovers of a crash in either way are removed by the next call.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    prefix = f".{target.name}.{_writer_tag()}."
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        if target.exists() and exchange(tmp, target):
            pass  # tmp now holds the old folder; the finally removes it
        elif target.exists():
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=target.parent))
            os.replace(target, old)  # onto the empty folder mkdtemp made
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block:
    ``fcntl.flock``, so two processes (or threads) doing a read-modify-write of the same
    file take turns; the kernel releases it if the holder dies."""
    import fcntl

    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def tqdm_disable(progress: bool) -> bool | None:
    """tqdm's ``disable`` for a bar that is wanted when ``progress``: off where output is not
    a terminal (tqdm reads ``None`` so), or logs (Airflow, CI, `make demo` into a file) fill
    with carriage-return floods. A notebook's output is no terminal either but shows
    tqdm.auto's widget bar, so inside a Jupyter kernel the bar stays on."""
    import sys

    if not progress:
        return True
    return False if "ipykernel" in sys.modules else None
