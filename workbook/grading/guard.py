"""A write guard for graded notebooks: file changes outside the sandbox raise PermissionError.

``workbook grade`` runs a submission in its own temporary project (cwd, WORKBOOK_ROOT, HOME,
TMPDIR, AIRFLOW_HOME all inside it), so ordinary code only ever touches the sandbox. This
guard catches the rest: an absolute path from the learner's laptop, ``os.chdir("/")``
followed by a relative write, a ``shutil.rmtree`` aimed at the checkout. It is a Python
audit hook (PEP 578), installed through a ``sitecustomize`` on the kernel's PYTHONPATH, so
it is active before the first cell and in every Python subprocess the notebook starts.

It guards Python code, not a determined attacker: a shell command (``!rm ...``) or native
code bypasses it. That is the outer layer's job: bubblewrap's read-only filesystem
(``workbook.grading.sandbox``), where the machine has it; this guard stays on inside it for its clear
messages.
"""

from __future__ import annotations

import os
import sys

#: Folders (os.pathsep-separated) where graded code may create, change or delete files.
ROOTS_ENV = "WORKBOOK_GUARD_ROOTS"

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
#: Event -> positions of (path, dir_fd) pairs in its arguments that the event changes.
_CHANGES: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.truncate": ((0, None),),
    "os.rename": ((0, 2), (1, 3)),  # also os.replace; the source disappears, so both count
    "os.link": ((1, 3),),
    "os.symlink": ((1, 2),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
    "shutil.rmtree": ((0, 1),),
    "shutil.copyfile": ((1, None),),
    "shutil.copytree": ((1, None),),
    "shutil.move": ((0, None), (1, None)),
    "sqlite3.connect": ((0, None),),
}


def _absolute(path, dir_fd: int | None) -> str | None:
    """The real absolute path an event touches, or None when it cannot be a file path."""
    if isinstance(path, int) or path is None:
        return None  # an open file descriptor: its path was checked when it was opened
    path = os.fsdecode(path)
    if path in (":memory:", "") or path.startswith("file::memory:"):
        return None
    if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):
        try:
            base = os.readlink(f"/proc/self/fd/{dir_fd}")
        except OSError:  # no /proc (macOS): rmtree's own event was checked at its root
            return None
        path = os.path.join(base, path)
    return os.path.realpath(path)


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return path.startswith("/dev/") or any(
        path == root or path.startswith(root + os.sep) for root in roots
    )


def check_event(event: str, args: tuple, roots: tuple[str, ...]) -> str | None:
    """The outside path ``event`` would change, or None if it is allowed (pure; tested)."""
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else flags & _WRITE_FLAGS
        targets = [(path, None)] if writing else []
    else:
        targets = [
            (args[p], args[d] if d is not None and d < len(args) else None)
            for p, d in _CHANGES.get(event, ())
        ]
    for path, dir_fd in targets:
        absolute = _absolute(path, dir_fd)
        if absolute is not None and not _inside(absolute, roots):
            return absolute
    return None


def install(roots: list[str]) -> None:
    """Add the audit hook for ``roots`` (for the rest of this process: hooks cannot be removed)."""
    resolved = tuple(os.path.realpath(r) for r in roots)

    def hook(event: str, args: tuple) -> None:
        if event in _CHANGES or event == "open":
            outside = check_event(event, args, resolved)
            if outside is not None:
                raise PermissionError(
                    f"workbook grade: {event} on {outside} is blocked: a graded notebook may "
                    "only change files inside its own sandbox (use paths relative to the "
                    "notebook, or shared.paths)"
                )

    sys.addaudithook(hook)


def install_from_env() -> None:
    """Install the guard when ``$WORKBOOK_GUARD_ROOTS`` is set (what the sitecustomize calls)."""
    roots = [r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r]
    if roots:
        install(roots)


#: The name this module has in a graded kernel: grading copies it beside the sitecustomize
#: (the kernel gets ``shared`` only, never ``workbook``). It imports nothing of the project.
GUARD_MODULE = "workbook_grade_guard"

SITECUSTOMIZE = f"""\
# Written by `workbook grade`: guard file writes in this sandbox (workbook/grading/guard.py,
# copied here as {GUARD_MODULE}.py).
import {GUARD_MODULE}

{GUARD_MODULE}.install_from_env()
"""
