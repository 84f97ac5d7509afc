"""The operating-system sandbox a graded kernel runs in, and its limits (``workbook grade``).

Two layers. The outer one is bubblewrap (``bwrap``, Debian's ``bubblewrap``), where the
machine allows it: the kernel sees the whole filesystem read-only, except its own sandbox
folder and a private /tmp; the instructor's home, the checkout (solutions, hidden checks,
dags) and the grader's own folders are replaced by empty folders, with only the Python
environment bound back in; new network, PID, IPC and UTS namespaces (no network at all,
and every process the kernel starts dies with it); ``--die-with-parent``; ``--new-session``
(no terminal injection). The inner layer is the audit-hook write guard (``workbook.grading.guard``),
always on, which turns a write outside the sandbox into a clear PermissionError.

Where bubblewrap is missing or cannot create namespaces (macOS, a container without user
namespaces), grading runs with the inner layer alone and says so ("python-guard only").

Limits apply in both cases, set by a small launcher (``python -m workbook.grading.sandbox``) that runs
between the grader and the kernel: memory and processes through a cgroup where this
process may create one (cgroup v1 or v2), else memory through RLIMIT_DATA and processes
not at all (RLIMIT_NPROC counts all of a user's processes, and Linux ignores it for root).
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared import paths

MODES = ("auto", "bwrap", "none")
DEFAULT_MEMORY_MB = 4096
DEFAULT_PROCESSES = 256


class SandboxUnavailable(RuntimeError):
    """``--sandbox bwrap`` was asked for and bubblewrap cannot run here."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int = DEFAULT_MEMORY_MB
    processes: int = DEFAULT_PROCESSES
    threads: int | None = None  # None: the kernel's libraries choose (every core)


# --------------------------------------------------------------------------- bubblewrap


@functools.cache
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox a kernel on this machine, or None when it can (probed
    once per process with the very command line grading uses, mounts included)."""
    import tempfile

    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    with tempfile.TemporaryDirectory(prefix="workbook-bwrap-probe-") as tmp:
        try:
            probe = _start_python(Path(tmp), Path(tmp))
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap did not run: {exc}"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no message"])[-1][:200]
        return f"bwrap cannot start the grader's Python as the kernel user here: {last}"
    return None


def _start_python(box_root: Path, cwd: Path, extra_hidden: Sequence[Path] = ()):
    """Start the grader's Python as a kernel starts: in bubblewrap with these mounts, as the
    kernel's user, importing ipykernel (isolated: nothing from the folders it can write)."""
    command = [*bwrap_command(box_root, cwd, extra_hidden), *drop_privileges(box_root)]
    command += [sys.executable, "-I", "-c", "import ipykernel"]
    env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def choose(mode: str) -> str:
    """The sandbox to use: "bwrap" or "none" (the audit-hook guard alone)."""
    if mode not in MODES:
        raise ValueError(f"sandbox mode {mode!r}: choose from {', '.join(MODES)}")
    if mode == "none":
        return "none"
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    if mode == "bwrap":
        raise SandboxUnavailable(f"--sandbox bwrap: {problem}")
    return "none"


#: The unprivileged user a kernel runs as when the grader runs as root (nobody).
KERNEL_UID = 65534


def kernel_user(kind: str) -> str:
    """Who the graded code runs as."""
    import pwd

    if kind == "bwrap" and os.geteuid() == 0:
        return f"uid {KERNEL_UID} (unprivileged; the grader runs as root)"
    if os.geteuid() == 0:
        return "uid 0 (root: only bubblewrap's sandbox runs it as another user)"
    return f"uid {os.geteuid()} ({pwd.getpwuid(os.geteuid()).pw_name})"


def describe(kind: str) -> str:
    """The one line grading prints at its start and puts in every report."""
    if kind == "bwrap":
        return (
            "bwrap (read-only filesystem, no network, own process tree) + python guard; "
            f"kernel user {kernel_user(kind)}"
        )
    reason = bwrap_problem() or "--sandbox none"
    return f"python-guard only ({reason}); kernel user {kernel_user(kind)}"


#: Run inside bubblewrap by a root grader, before the kernel: the sandbox folder (made by
#: root, the kernel's connection file included) is given to the unprivileged user, who then
#: becomes the process's only identity (setuid from root to another user drops every
#: capability), and the kernel is started. Root-only host files (/etc/shadow, SSH host
#: keys) are then out of reach, as they would not be for a uid 0 with no capabilities.
_DROP = (
    "import os, sys\n"
    "uid = int(sys.argv[1])\n"
    "for folder, _, files in os.walk(sys.argv[2]):\n"
    "    for path in [folder, *(os.path.join(folder, f) for f in files)]:\n"
    "        os.lchown(path, uid, uid)\n"
    "os.setgroups([])\n"
    "os.setgid(uid)\n"
    "os.setuid(uid)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def drop_privileges(box_root: Path) -> list[str]:
    """The command that goes between bubblewrap's and the kernel's when the grader is root:
    it hands the sandbox folder to KERNEL_UID and becomes that user (nothing otherwise)."""
    if os.geteuid() != 0:
        return []
    return [sys.executable, "-I", "-c", _DROP, str(KERNEL_UID), str(box_root)]


#: Where services put their Unix sockets (D-Bus, Docker, systemd, databases): a read-only
#: mount does not stop connect(), so these are replaced by empty folders too.
SOCKET_PLACES = ("/run", "/var/run", "/var/tmp")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def hidden_paths(extra: Sequence[Path] = ()) -> list[Path]:
    """What the kernel must not see: the checkout the package runs from (solutions, the
    hidden suite, dags), the project root in use, the instructor's home, the grader's temp
    folder (other kernels' sandboxes), where sockets live, and ``extra`` (the submissions
    and the results)."""
    import tempfile

    package_root = (
        Path(__file__).resolve().parents[2]
    )  # the checkout: workbook/grading/ is two below
    candidates = [package_root, paths.project_root(), Path.home(), Path(tempfile.gettempdir())]
    candidates += [Path(p) for p in SOCKET_PLACES] + [Path(p) for p in extra]
    out: list[Path] = []
    for path in candidates:
        if path.is_symlink():  # /var/run -> /run: hidden through its target
            continue
        path = path.resolve()
        if path not in (Path("/"), Path("/tmp")) and path.is_dir() and path not in out:
            out.append(path)
    return out


def bwrap_command(box_root: Path, cwd: Path, extra_hidden: Sequence[Path] = ()) -> list[str]:
    """bubblewrap's command line up to (and including) ``--``; the kernel's follows.

    Mounts apply in order, later ones on top: the whole filesystem read-only, then empty
    folders over what must stay hidden, then the Python environment bound back where it
    lies inside one of them (.venv in the checkout, pyenv in the home), then the hidden
    folders inside that environment hidden again, and last the submission's own folder."""
    hidden = hidden_paths(extra_hidden)
    command = [
        shutil.which("bwrap") or "bwrap",
        "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
        # a root grader's kernel user must be able to write its own temp (bubblewrap 0.5+)
        *(["--perms", "1777"] if os.geteuid() == 0 else []), "--tmpfs", "/tmp",
    ]  # fmt: skip
    for path in hidden:
        command += ["--tmpfs", str(path)]
    python = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    python.add(Path(os.path.realpath(sys.executable)).parent.parent)
    # Only what a hidden folder covered is bound back: binding /usr again (a venv on the
    # system Python) would uncover a hidden folder beneath it.
    # /tmp is a fresh tmpfs too: a virtual environment made there is bound back like one in
    # the checkout (an environment that *is* a hidden folder stays hidden: see python_problem)
    covering = [*hidden, Path("/tmp")]
    rebound = sorted(p for p in python if any(_inside(p, h) and p != h for h in covering))
    for path in rebound:
        command += _reachable(path, covering) + ["--ro-bind", str(path), str(path)]
    for path in hidden:
        if any(_inside(path, p) and path != p for p in rebound):
            command += ["--tmpfs", str(path)]
    command += _reachable(box_root, covering) + ["--bind", str(box_root), str(box_root)]
    if os.geteuid() == 0:
        # A root grader: no user namespace (its only user would be root's), and the
        # capabilities stay until drop_privileges makes the kernel an unprivileged user.
        command += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                    "--unshare-cgroup-try"]  # fmt: skip
    else:
        # user, IPC, PID, network, UTS and cgroup namespaces, and no capability inside
        command += ["--unshare-all", "--cap-drop", "ALL"]
    return [*command, "--die-with-parent", "--new-session", "--chdir", str(cwd), "--"]


def _reachable(path: Path, covering: Sequence[Path]) -> list[str]:
    """bubblewrap's arguments that make the folders above ``path`` inside an empty (tmpfs)
    folder traversable by anyone: bubblewrap would make them 0700, which the unprivileged
    kernel user of a root grader cannot pass through (bubblewrap 0.5+; not needed, so not
    asked for, when the grader is not root)."""
    if os.geteuid() != 0:
        return []
    out: list[str] = []
    for parent in reversed(path.parents):
        if any(_inside(parent, h) and parent != h for h in covering):
            out += ["--perms", "0755", "--dir", str(parent)]
    return out


def python_problem(box_root: Path, cwd: Path, extra_hidden: Sequence[Path] = ()) -> str | None:
    """Why the grader's Python cannot start a kernel inside bubblewrap, or None when it can:
    asked after a kernel died before it answered, so the report names the cause (an
    environment the sandbox hides) instead of a dead kernel."""
    try:
        done = _start_python(box_root, cwd, extra_hidden)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the sandbox could not run the grader's Python: {exc}"
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
    return (
        f"the grader's Python environment ({Path(sys.prefix).resolve()}) cannot run inside "
        f"the sandbox, which hides or lacks part of it: {last}; grade from an environment "
        "elsewhere, or with --sandbox none"
    )


# --------------------------------------------------------------------------- cgroups


def _own_cgroups() -> dict[str, str]:
    """{controller (or "" for cgroup v2): this process's cgroup path} from /proc/self/cgroup."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                out[controller] = path
    return out


@dataclass
class Cgroup:
    """A memory and pids cgroup for one kernel, where this machine lets the grader make one."""

    dirs: dict[str, Path]  # "memory" / "pids" -> the folder (v1: one per controller; v2: one)
    version: int

    @classmethod
    def create(cls, limits: Limits) -> Cgroup | None:
        """Make it, or None when cgroups cannot be created here (not Linux, not allowed)."""
        name = f"workbook-grade-{uuid.uuid4().hex[:12]}"
        own = _own_cgroups()
        memory = str(limits.memory_mb * 1024 * 1024)
        made: dict[str, Path] = {}
        try:
            if "memory" in own and "pids" in own:  # cgroup v1
                for controller, setting, value in (
                    ("memory", "memory.limit_in_bytes", memory),
                    ("pids", "pids.max", str(limits.processes)),
                ):
                    folder = Path("/sys/fs/cgroup", controller, own[controller].lstrip("/"), name)
                    folder.mkdir()
                    made[controller] = folder
                    (folder / setting).write_text(value)
                swap = made["memory"] / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(memory)  # no escaping the limit into swap
                return cls(made, 1)
            if "" in own and Path("/sys/fs/cgroup/cgroup.controllers").exists():  # v2
                folder = Path("/sys/fs/cgroup", own[""].lstrip("/"), name)
                folder.mkdir()
                made["memory"] = made["pids"] = folder
                (folder / "memory.max").write_text(memory)
                (folder / "pids.max").write_text(str(limits.processes))
                with contextlib.suppress(OSError):  # only where swap is accounted
                    (folder / "memory.swap.max").write_text("0")
                return cls(made, 2)
        except OSError:
            cls(made, 1).remove()
        return None

    def describe(self) -> str:
        return f"cgroup v{self.version}"

    def procs_files(self) -> list[str]:
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    def oom_killed(self) -> bool:
        """Did the memory limit kill a process in it?"""
        folder = self.dirs["memory"]
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        with contextlib.suppress(OSError, ValueError):
            for line in (folder / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
            if self.version == 1:  # kernels without an oom_kill counter: the limit was hit
                return int((folder / "memory.failcnt").read_text()) > 0
        return False

    def kill_all(self) -> None:
        """SIGKILL every process still in it (what the notebook started and left running)."""
        import signal
        import time

        procs = self.dirs["pids"] / "cgroup.procs"
        for _ in range(50):
            try:
                pids = [int(line) for line in procs.read_text().split()]
            except OSError:
                return
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def remove(self) -> None:
        """Remove the folders once every process in them has exited."""
        import time

        for folder in set(self.dirs.values()):
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


# --------------------------------------------------------------------------- launcher


def launcher_command(limits: Limits, cgroup: Cgroup | None) -> list[str]:
    """The start of the kernel's command line: this module's launcher with the limits."""
    # -I: the launcher is the grader's code, run outside the sandbox with the kernel's
    # environment; isolated mode keeps that environment's PYTHONPATH (the guard, the package
    # copy) out of it.
    command = [sys.executable, "-I", "-m", "workbook.grading.sandbox"]
    command += ["--memory-mb", str(limits.memory_mb)]
    for procs in cgroup.procs_files() if cgroup else []:
        command += ["--cgroup-procs", procs]
    return [*command, "--"]


def _launch(argv: list[str]) -> None:
    """Join the cgroup (or set rlimits), then become the given command."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workbook.grading.sandbox")
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--cgroup-procs", action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    for procs in args.cgroup_procs:
        Path(procs).write_text(str(os.getpid()))
    if sys.platform == "linux":
        # If the grader dies, so does this process (then bubblewrap, then the kernel): the
        # death signal survives exec. 1 = PR_SET_PDEATHSIG.
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if not args.cgroup_procs:
        # No cgroup: RLIMIT_DATA caps the heap and private mappings (what an allocation
        # uses), not the address space, which torch's libraries alone fill past 3 GB. The
        # process count stays unlimited: RLIMIT_NPROC counts every process of the user, not
        # the kernel's, and Linux ignores it for root.
        limit = args.memory_mb * 1024 * 1024
        with contextlib.suppress(ValueError, OSError):  # macOS may refuse it
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    os.execvp(command[0], command)


if __name__ == "__main__":
    _launch(sys.argv[1:])
