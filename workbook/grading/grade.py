"""Grade learner notebooks: run each in a sandbox, then run its lab's check suite in the same
kernel (``workbook grade``).

One submission:

1. read and validate the notebook; find its lab (first heading, else file name, or --lab);
2. copy it into a fresh temporary project (configs and MNIST copied, never linked, so a
   submission cannot reach the checkout through them), with a copy of the ``shared``
   package that lacks the hidden suite, and start its kernel inside the OS sandbox with
   its limits (``workbook.grading.sandbox``: bubblewrap where available, the write guard always);
3. inject the lab's grading parameters (papermill) and run the cells in order (nbclient).
   No error stops the run (a failing self-check, an unwritten stub, a crash), so every
   exercise is graded on its own; checks whose variables were never defined are reported
   as *not reached*. Past the time budget the cell is interrupted; a
   kernel that does not answer is killed. Output beyond a cap is dropped;
4. only then send the hidden checks' code into the kernel (one loader cell, whose source is
   never saved), and run one appended cell per check (``run_in_kernel``).

The sandbox is deleted afterwards; nothing outside it changes.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat

import shared
from shared import paths
from shared.experiments import KERNEL_NAME
from shared.io import atomic_write_text, tqdm_disable
from workbook.grading import guard, sandbox
from workbook.grading.gradebook import (
    ERROR,
    FAIL,
    NOT_REACHED,
    PASS,
    TIMED_OUT,
    CheckResult,
    ExecutionError,
    Report,
    WrittenAnswer,
)
from workbook.grading.guard import GUARD_MODULE, ROOTS_ENV, SITECUSTOMIZE
from workbook.grading.sandbox import Limits
from workbook.grading.suites import LABS, Lab

#: Bytes of cell output kept per submission (stdout, images, ...); the rest is dropped.
OUTPUT_CAP = 2_000_000
#: Seconds an interrupted kernel gets to answer before it is killed.
INTERRUPT_GRACE = 10
DEFAULT_TIMEOUT = 300
CHECK_TAG = "workbook-grade-check"
MEMORY_EXCEEDED = "memory limit exceeded"
#: Seconds ``_calibration_work`` takes on the machine the checks' time limits were set on
#: (the project's 2-core machine with nothing else running, 2026-12-05: 0.172 s, the median
#: of 7); ``speed_factor`` divides by it.
CALIBRATION_SECONDS = 0.17
#: However busy the machine, a limit grows at most this much: a check that never ends must
#: still end.
MAX_SPEED_FACTOR = 4.0


def _calibration_work() -> int:
    """A fixed piece of pure-Python work (no I/O, one core), the yardstick of speed_factor."""
    total = 0
    for i in range(3_000_000):
        total += i * i % 7
    return total


def speed_factor() -> float:
    """How many times slower this machine runs now than the one the checks' time limits
    were set on: ``_calibration_work`` timed three times (the median), over
    CALIBRATION_SECONDS; never below 1, at most MAX_SPEED_FACTOR. Each check's limit is
    scaled by it, so a correct submission does not time out because the machine is busy
    (the limits were set with room for a quiet machine only)."""
    samples = []
    for _ in range(3):
        start = time.perf_counter()
        _calibration_work()
        samples.append(time.perf_counter() - start)
    return min(MAX_SPEED_FACTOR, max(1.0, sorted(samples)[1] / CALIBRATION_SECONDS))


class GradeInputError(ValueError):
    """The submission cannot be graded as given; ``status`` is "unreadable" or "wrong lab"."""

    def __init__(self, message: str, status: str = "unreadable") -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- input


def read_submission(path: str | os.PathLike[str]) -> nbformat.NotebookNode:
    """The notebook at ``path``, validated; GradeInputError says what is wrong with it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GradeInputError(f"cannot read {path}: {exc}") from None
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises NotJSONError, ValueError, KeyError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GradeInputError(f"{path} is not a notebook (invalid JSON): {first}") from None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise GradeInputError(f"{path} is not a valid notebook: {exc.message}") from None
    if not any(c.cell_type == "code" for c in nb.cells):
        raise GradeInputError(f"{path} has no code cells")
    return nb


def detect_lab(nb: nbformat.NotebookNode, filename: str = "") -> Lab | None:
    """The lab a notebook belongs to: its first heading, else its file name."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("#"):
            heading = cell.source.lstrip().splitlines()[0]
            for lab in LABS.values():
                if lab.heading.match(heading):
                    return lab
            break
    for lab in LABS.values():
        # "02_lab1_2b_" of 02_lab1_2b_training_on_mnist.ipynb: two labs share the "02_"
        prefix = re.match(r"\d\d_(lab\d+_\d+[a-z]?_)?", lab.notebook).group(0)
        if filename == lab.notebook or filename.startswith(prefix):
            return lab
    return None


def resolve_lab(nb: nbformat.NotebookNode, filename: str, lab_id: str | None) -> Lab:
    found = detect_lab(nb, filename)
    if lab_id is None:
        if found is None:
            raise GradeInputError(
                f"{filename}: cannot tell which lab this is (no lab heading, unknown file "
                f"name); pass --lab ({', '.join(LABS)})"
            )
        return found
    if lab_id not in LABS:
        raise GradeInputError(f"unknown lab {lab_id!r}; choose from {', '.join(LABS)}")
    if found is not None and found.id != lab_id:
        raise GradeInputError(f"{filename} is {found.title}, not lab {lab_id}", "wrong lab")
    return LABS[lab_id]


@functools.cache
def _questions(solution: Path) -> tuple:
    """A solution notebook's questions answered in words (read once per batch, not once per
    submission)."""
    from workbook import labs

    return tuple(labs.written_questions(nbformat.read(solution, as_version=4)))


def written_answers(nb: nbformat.NotebookNode, lab: Lab) -> list[WrittenAnswer]:
    """The learner's answers in words to the lab's questions (the solution notebook says
    which), read from the submission's answer cells by their ids; pending until scored.
    Nothing of them runs: they are text for the instructor."""
    from workbook import labs

    cells = {c.get("id"): c for c in nb.cells}
    # A notebook made from the lab has cells `answer-<id>`; the solution itself (graded to
    # check the grader, or by an instructor) holds its model answers under their markers.
    marked = {answer: c for c in nb.cells if (answer := labs.answer_id(c))}
    out = []
    for q in _questions(paths.project_root() / "solutions" / lab.notebook):
        cell = cells.get(f"answer-{q.id}") or marked.get(q.id)
        text = labs.answer_text(cell) if cell is not None else ""
        # a blank answer scores 0 without the instructor; the others wait for them
        out.append(WrittenAnswer(q.id, q.prompt, q.points, text, None if text else 0))
    return out


# --------------------------------------------------------------------------- sandbox


def make_sandbox(root: Path, source: Path | None = None) -> dict[str, Path]:
    """A throw-away project under ``root``: configs and MNIST copied from ``source`` (the
    project root), a dags/ with no DAG (only its .airflowignore), labs/ as the working
    folder, its own home and temp, and
    the ``shared`` package without its hidden modules (first on the kernel's path)."""
    source = source or paths.project_root()
    root.mkdir(parents=True, exist_ok=True)
    mnist = source / "data" / "MNIST" / "raw"
    if not mnist.is_dir():
        raise FileNotFoundError(f"{mnist}: MNIST is not provisioned; run `make setup` first")
    project = root / "project"
    shutil.copytree(source / "configs", project / "configs")
    raw = project / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in sorted(mnist.iterdir()):
        if f.is_file() and not f.name.endswith(".gz"):
            shutil.copyfile(f, raw / f.name)
    for d in ("dags", "labs", ".airflow"):
        (project / d).mkdir()
    shutil.copyfile(source / "dags" / ".airflowignore", project / "dags" / ".airflowignore")
    for d in ("home", "tmp", "guard", "ipc", "kernels"):
        (root / d).mkdir()
    # The guard runs inside the kernel, which has no ``workbook``: its module is copied beside
    # the sitecustomize that installs it.
    shutil.copyfile(Path(guard.__file__), root / "guard" / f"{GUARD_MODULE}.py")
    (root / "guard" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # The learners' library, and nothing of the instructors' toolkit (``workbook``: the
    # grader, its hidden suites, the site builder): a notebook imports ``shared`` only.
    shutil.copytree(
        Path(shared.__file__).resolve().parent,
        root / "pkg" / "shared",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return {"root": root, "project": project, "cwd": project / "labs"}


#: What the kernel inherits from the grader's environment; nothing else of the instructor's
#: shell (tokens, cloud keys, a VIRTUAL_ENV elsewhere) reaches graded code.
ENV_ALLOWED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


def kernel_env(box: dict[str, Path], threads: int | None = None) -> dict[str, str]:
    """The kernel's environment, built from an allow-list: every path it writes to points
    into the sandbox; with ``threads``, the CPU thread pools are capped (kernels grading
    side by side)."""
    root, project = box["root"], box["project"]
    env = {k: os.environ[k] for k in ENV_ALLOWED if k in os.environ}
    env.update(
        {
            paths.ROOT_ENV: str(project),
            ROOTS_ENV: str(root),
            # the guard's sitecustomize, then the package copy without the hidden suite
            "PYTHONPATH": os.pathsep.join([str(root / "guard"), str(root / "pkg")]),
            "PYTHONDONTWRITEBYTECODE": "1",  # no .pyc writes into site-packages
            "HOME": str(root / "home"),
            "TMPDIR": str(root / "tmp"),
            "MPLCONFIGDIR": str(root / "home" / ".matplotlib"),
            "IPYTHONDIR": str(root / "home" / ".ipython"),
            "JUPYTER_RUNTIME_DIR": str(root / "home" / "runtime"),
            "AIRFLOW_HOME": str(project / ".airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{project / '.airflow' / 'airflow.db'}",
        }
    )
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    return env


def kernel_manager(box: dict[str, Path], kind: str, limits: Limits, cgroup, hide=()):
    """A kernel manager whose kernel starts through the limits launcher and, with
    ``kind == "bwrap"``, inside bubblewrap. Inside, the kernel has no network, so it talks
    to the grader over Unix sockets in the sandbox folder (ZeroMQ's ipc transport) and is
    interrupted by a message, since a signal to bubblewrap would not reach it."""
    import json

    from jupyter_client import AsyncKernelManager as KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    argv = sandbox.launcher_command(limits, cgroup)
    if kind == "bwrap":
        argv += sandbox.bwrap_command(box["root"], box["cwd"], hide)
        argv += sandbox.drop_privileges(box["root"])
    argv += [
        sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
        # CRITICAL: with no parent handle (below) ipykernel prints a connection banner
        # below that level; the kernel's log goes to kernel.log either way.
        "--IPKernelApp.log_level=CRITICAL",
        # Inside a PID namespace the kernel's parent is bubblewrap's init (PID 1), which
        # ipykernel reads as "orphaned" and exits; bubblewrap's --die-with-parent does
        # that job instead.
        "--IPKernelApp.parent_handle=0",
    ]  # fmt: skip
    spec = box["root"] / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": argv,
                "display_name": f"{KERNEL_NAME} (graded)",
                "language": "python",
                "interrupt_mode": "message" if kind == "bwrap" else "signal",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(box["root"] / "kernels")])
    ipc = {"transport": "ipc", "ip": str(box["root"] / "ipc" / "kernel")} if kind == "bwrap" else {}
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs, **ipc)
    km.connection_file = str(box["root"] / "ipc" / "connection.json")
    return km


# --------------------------------------------------------------------------- execution


def _output_size(content: dict[str, Any]) -> int:
    if "text" in content:
        return len(content["text"])
    if "evalue" in content or "traceback" in content:
        return len(str(content.get("evalue", ""))) + sum(map(len, content.get("traceback", [])))
    return sum(len(str(v)) for v in content.get("data", {}).values())


#: Characters of an error's message the grader keeps for its report.
ERROR_KEPT = 10_000


def _cut(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    room = max(0, room)
    return text[:room] + f"\n[workbook grade: {len(text) - room:,} characters cut]"


def _cut_error(content: dict[str, Any], room: int) -> dict[str, Any]:
    """An error's content within ``room`` characters (at least 1,000, so its name and the
    start of its message survive): the message, then the traceback's lines, each cut with
    a line saying how much was cut."""
    room = max(1_000, room)
    out = dict(content)
    if "evalue" in out:
        out["evalue"] = _cut(str(out["evalue"]), room)
        room -= len(out["evalue"])
    if "traceback" in out:
        lines = []
        for line in out["traceback"]:
            lines.append(_cut(str(line), max(200, room)))
            room -= len(lines[-1])
            if room <= 0:
                lines.append(f"[workbook grade: {len(out['traceback']) - len(lines)} more "
                             "traceback lines cut]")  # fmt: skip
                break
        out["traceback"] = lines
    return out


def _client_class():
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        """nbclient that keeps at most OUTPUT_CAP bytes of output and records each reply."""

        def __init__(self, nb, **kw):
            super().__init__(nb, **kw)
            self.used, self.truncated, self.replies = 0, False, {}
            self.on_cell_executed = self._record

        def _record(self, cell, cell_index, execute_reply):
            content = (execute_reply or {}).get("content", {})
            # what the grader reads of a reply, the error's message cut (it has been kept
            # once in the cell's outputs already, within the cap)
            self.replies[cell_index] = _cut_error(
                {k: content[k] for k in ("status", "ename", "evalue") if k in content},
                ERROR_KEPT,
            )

        def output(self, outs, msg, display_id, cell_index):
            if msg["msg_type"] == "error":  # an error counts too, cut to what is left
                if self.used > OUTPUT_CAP and any(o.get("output_type") == "error" for o in outs):
                    self.truncated = True  # past the cap, one error per cell is enough
                    return None
                msg = {**msg, "content": _cut_error(msg["content"], OUTPUT_CAP - self.used)}
            self.used += _output_size(msg["content"])
            if self.used > OUTPUT_CAP and msg["msg_type"] != "error":
                if not self.truncated:
                    outs.append(
                        nbformat.v4.new_output(
                            "stream", name="stderr", text="\n[workbook grade: output cap "
                            f"of {OUTPUT_CAP:,} bytes reached; the rest is dropped]\n",
                        )
                    )  # fmt: skip
                self.truncated = True
                return None
            return super().output(outs, msg, display_id, cell_index)

    return CappedClient


def _last_line(content: dict[str, Any]) -> str:
    lines = [
        line for line in str(content.get("evalue", "")).strip().splitlines()
        if not line.startswith("[workbook grade:")
    ]  # fmt: skip
    value = lines[-1] if lines else ""
    return f"{content.get('ename', 'Error')}: {value}"[:300].rstrip(": ")


#: The hidden suite's module name inside a graded kernel.
SUITE_MODULE = "workbook_grading_suites"
LOADER_SAVED_AS = "# workbook grade loaded the hidden checks here (their code is not saved)"


def _loader_cell(suite: bool = True) -> nbformat.NotebookNode:
    """The cell that brings the checks into the kernel once the submission's cells are done:
    fresh modules built from the grader's copies of the sources (the kernel's own package
    copy lacks the hidden suite), so neither a check the notebook reassigned
    (``checks.train_loop = lambda f: None``) nor a module it planted in sys.modules is used."""
    from shared import checks
    from workbook.grading import suites

    # The suite is loaded under a name of its own: the kernel has no ``workbook`` package.
    sources = {"shared.checks": Path(checks.__file__).read_text()}
    if suite:  # without: the checks alone (the speedrun's measurement)
        sources[SUITE_MODULE] = Path(suites.__file__).read_text()
    source = (
        "def __workbook_load(sources):\n"
        "    import importlib, sys, types\n"
        "    for name, text in sources.items():\n"
        "        module = types.ModuleType(name)\n"
        "        module.__file__ = f'<workbook grade: {name}>'\n"
        "        sys.modules[name] = module\n"
        "        parent, _, leaf = name.rpartition('.')\n"
        "        if parent:\n"
        "            setattr(importlib.import_module(parent), leaf, module)\n"
        "        exec(compile(text, module.__file__, 'exec'), module.__dict__)\n"
        "    return module\n"
        f"__workbook_suites = __workbook_load({sources!r})\n"
        "del __workbook_load"
    )
    return nbformat.v4.new_code_cell(
        source, metadata={"tags": [CHECK_TAG], "workbook_loader": True}
    )


def _check_cell(lab: Lab, check_id: str) -> nbformat.NotebookNode:
    source = f"__workbook_suites.run_in_kernel(globals(), {lab.id!r}, {check_id!r})"
    return nbformat.v4.new_code_cell(
        source, metadata={"tags": [CHECK_TAG], "workbook_check": check_id}
    )


def strip_grading_marks(cell: nbformat.NotebookNode) -> None:
    """A submitted cell made plain: every ``workbook_*`` metadata key and every
    ``workbook-*`` tag removed (nbgrader overwrites its grading cells the same way), so a
    cell dressed up as a check (its tag, a ``workbook_check`` key) is run as the learner's
    own code, and only the cells the grader appends are checks."""
    for key in [k for k in cell.metadata if k.startswith("workbook")]:
        del cell.metadata[key]
    tags = cell.metadata.get("tags")
    if isinstance(tags, list):
        cell.metadata["tags"] = [t for t in tags if not str(t).startswith("workbook")]


def _prepare(
    nb: nbformat.NotebookNode, lab: Lab, measure: bool = True
) -> tuple[nbformat.NotebookNode, list[int]]:
    """The notebook to execute (parameters injected, check cells appended; measurements
    only with ``measure``) and, per cell of the submission, its number as the learner
    counts it (1 = the top cell)."""
    import copy

    from papermill.parameterize import parameterize_notebook

    run = copy.deepcopy(nb)  # papermill edits the notebook it is given
    for cell in run.cells:
        strip_grading_marks(cell)
    for i, cell in enumerate(run.cells, 1):
        cell.metadata["workbook_cell"] = i
        cell.metadata.setdefault("tags", [])  # papermill reads every cell's tags
    run.metadata.setdefault("papermill", {})
    run = parameterize_notebook(run, lab.parameters, kernel_name=KERNEL_NAME, language="python")
    numbers, last = [], 0
    for cell in run.cells:  # the injected cell counts as the parameters cell it follows
        last = cell.metadata.pop("workbook_cell", last)
        numbers.append(last)
    run.cells.append(_loader_cell())
    run.cells.extend(_check_cell(lab, c.id) for c in lab.checks if measure or not c.measures)
    return run, numbers


def _classify(content: dict[str, Any], what: str) -> tuple[str, str]:
    """(status, hint) from a check cell's reply."""
    if content.get("status") != "error":
        return PASS, ""
    message = str(content.get("evalue", "")).strip()
    if content.get("ename") == "CheckNotRun":
        return NOT_REACHED, message
    if content.get("ename") in ("CheckFailed", "AssertionError"):
        return FAIL, message.removeprefix(what + ": ")
    return FAIL, _last_line(content)  # run_in_kernel turns any other error into a hint


def _run_cell(client, cell, index: int, seconds: float) -> dict[str, Any]:
    """Execute one cell with a time limit; its reply ({"status", "ename", ...})."""
    client.timeout = max(1, int(seconds))
    client.execute_cell(cell, index)
    return client.replies.get(index, {})


def _kernel_answers(client, run_nb) -> bool:
    """After an interrupt: does the kernel run a trivial cell within INTERRUPT_GRACE?"""
    run_nb.cells.append(nbformat.v4.new_code_cell("pass"))
    try:
        reply = _run_cell(client, run_nb.cells[-1], len(run_nb.cells) - 1, INTERRUPT_GRACE)
    finally:
        run_nb.cells.pop()
    return reply.get("ename") != "Timeout"


def _out_of_memory(reply: dict[str, Any]) -> bool:
    """Did an allocation fail? Python says MemoryError; torch's CPU allocator raises a
    RuntimeError (or its OutOfMemoryError) that says it cannot allocate memory."""
    name, value = reply.get("ename", ""), str(reply.get("evalue", ""))
    return name in ("MemoryError", "OutOfMemoryError") or (
        name == "RuntimeError" and "can't allocate memory" in value
    )


def _log_tail(path: Path, limit: int = 65536) -> list[str]:
    """The last lines of the kernel's log, at most ``limit`` bytes of it."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
        return f.read().decode(errors="replace").strip().splitlines()


def _run_submission(client, run_nb, numbers, timeout: int, report: Report) -> None:
    """The submission's own cells, in order, within ``timeout`` seconds altogether."""
    deadline = time.monotonic() + timeout
    for index, cell in enumerate(run_nb.cells):
        if CHECK_TAG in cell.metadata.get("tags", []) or cell.cell_type != "code":
            continue
        remaining = deadline - time.monotonic()
        reply = _run_cell(client, cell, index, remaining) if remaining > 0 else {}
        if remaining <= 0 or reply.get("ename") == "Timeout":
            report.status = "timeout"
            report.errors.append(
                ExecutionError(numbers[index], f"timed out after {timeout} s", True)
            )
            return
        if reply.get("status") == "error":
            # Execution goes on whatever the error: an exercise that fails (or crashes) must
            # not cost the later, independent ones their points. What depended on it fails
            # in its turn, and its checks report the names it left undefined as not reached.
            report.errors.append(ExecutionError(numbers[index], _last_line(reply), False))
            if _out_of_memory(reply):  # the RLIMIT_DATA fallback's way to say it
                report.status = MEMORY_EXCEEDED
                return


def _run_checks(
    client, run_nb, lab: Lab, speed: float = 1.0
) -> tuple[dict[str, tuple[str, str]], tuple[str, str]]:
    """The appended check cells: {check id: (status, hint)}, and what became of the rest
    (status, why). Each check's time limit is its own times ``speed`` (``speed_factor``)."""
    results: dict[str, tuple[str, str]] = {}
    for index, cell in enumerate(run_nb.cells):
        if CHECK_TAG not in cell.metadata.get("tags", []):
            continue
        if cell.metadata.get("workbook_loader"):
            reply = _run_cell(client, cell, index, 60 * speed)
            if reply.get("status") == "error":
                return results, (ERROR, f"the checks could not be loaded: {_last_line(reply)}")
            continue
        check = lab.check(cell.metadata["workbook_check"])
        limit = check.timeout * speed
        reply = _run_cell(client, cell, index, limit)
        if reply.get("ename") == "Timeout":
            scaled = (
                f" ({check.timeout} s x{speed:.1f} for this machine's speed)" if speed > 1 else ""
            )
            results[check.id] = (
                TIMED_OUT,
                f"the check ran past its limit of {limit:.0f} s{scaled}",
            )
            if not _kernel_answers(client, run_nb):
                return results, (
                    NOT_REACHED,
                    "an earlier check timed out and its kernel no longer answered",
                )
            continue
        results[check.id] = _classify(reply, check.what)
    return results, (NOT_REACHED, "")


def _execute(
    run_nb, numbers, lab: Lab, box, timeout: int, report: Report, limits: Limits, kind: str,
    hide=(), speed: float = 1.0,
) -> None:  # fmt: skip
    """Run the submission's cells, then the check cells, filling ``report``."""
    from nbclient.exceptions import DeadKernelError

    results: dict[str, tuple[str, str]] = {}
    startup_failed = False
    cgroup = sandbox.Cgroup.create(limits)
    report.limits = _limits_line(limits, cgroup) + (
        f"; check time limits x{speed:.1f} (this machine's speed now)" if speed > 1 else ""
    )
    try:
        client = _client_class()(
            run_nb,
            km=kernel_manager(box, kind, limits, cgroup, hide),
            allow_errors=True,  # the grader decides which errors stop the run
            interrupt_on_timeout=True,  # past its time a cell is interrupted, like the ■ button
            error_on_timeout={"ename": "Timeout", "evalue": "", "traceback": []},
            shutdown_kernel="immediate",
            startup_timeout=120,
        )
        results, rest = _run_in_kernel(
            client, run_nb, numbers, lab, box, timeout, report, limits, speed
        )
    except DeadKernelError:
        rest = (NOT_REACHED, _kernel_death(report, box, limits, cgroup))
    except RuntimeError:  # jupyter_client: "Kernel died before replying to kernel_info"
        if kind != "bwrap" or box.get("started"):
            raise
        startup_failed = True
    finally:
        if cgroup is not None:  # whatever the kernel left behind, even without bubblewrap
            cgroup.kill_all()
            cgroup.remove()
    if startup_failed:  # no learner code ran: ask why the grader's Python did not start
        why = sandbox.python_problem(box["root"], box["cwd"], hide)
        if why is None:
            raise RuntimeError("the kernel did not start, and the grader's Python does")
        report.status, report.message = "grader error", why
        rest = (NOT_REACHED, why)
    report.output_truncated = client.truncated
    _record_checks(report, lab, run_nb, results, rest)
    for cell in run_nb.cells:  # the executed copy never carries the hidden checks' code
        if cell.metadata.get("workbook_loader"):
            cell.source, cell.outputs = LOADER_SAVED_AS, []


def _limits_line(limits: Limits, cgroup) -> str:
    return (
        f"memory {limits.memory_mb} MB and {limits.processes} processes ({cgroup.describe()})"
        if cgroup
        else f"memory {limits.memory_mb} MB (RLIMIT_DATA), processes not limited (no cgroup)"
    ) + (f", {limits.threads} CPU threads" if limits.threads else "")


def _run_in_kernel(
    client, run_nb, numbers, lab: Lab, box, timeout: int, report: Report, limits: Limits,
    speed: float = 1.0,
) -> tuple[dict[str, tuple[str, str]], tuple[str, str]]:  # fmt: skip
    """The submission, then (unless the run left nothing to check) the checks, in one
    kernel; returns the checks' results and what became of those that did not run."""
    # The kernel's own stdout and stderr (its banner, jupyter warnings, a crash's last
    # words) go to a log outside the folder the kernel can write, never into the
    # grader's output; a dead kernel's report quotes its last line.
    with (
        open(box["log"], "w") as log,
        # cleanup_kc: nbclient shuts down only kernels whose manager it made itself
        client.setup_kernel(
            cleanup_kc=True,
            env=kernel_env(box, limits.threads),
            cwd=str(box["cwd"]),
            stdout=log,
            stderr=log,
        ),  # fmt: skip
    ):
        box["started"] = True  # from here on, learner code may have run
        _run_submission(client, run_nb, numbers, timeout, report)
        reason = ""
        if report.status == "timeout" and not _kernel_answers(client, run_nb):
            reason = f"the kernel ignored the interrupt at {timeout} s and was killed"
            report.message = reason
        elif report.status == "timeout":
            report.message = f"interrupted after {timeout} s; the checks ran on what it defined"
        elif report.status == MEMORY_EXCEEDED:
            reason = f"{MEMORY_EXCEEDED} ({limits.memory_mb} MB)"
            report.message = reason
        if reason:
            return {}, (NOT_REACHED, reason)
        return _run_checks(client, run_nb, lab, speed)


def _kernel_death(report: Report, box, limits: Limits, cgroup) -> str:
    """Status and message for a kernel that died; returns why the checks did not run."""
    if cgroup is not None and cgroup.oom_killed():
        report.status = MEMORY_EXCEEDED
        report.message = f"{MEMORY_EXCEEDED} ({limits.memory_mb} MB): the kernel was stopped"
        return report.message
    report.status = "kernel died"
    # the kernel logs at CRITICAL only, so its last line is its own last words
    last = _log_tail(box["log"])[-1:]
    reason = "the kernel died (out of memory, a crash, or the notebook exited it)"
    report.message = reason + (f"; its last words: {last[0][:200]}" if last else "")
    return reason


def _record_checks(report: Report, lab: Lab, run_nb, results, rest: tuple[str, str]) -> None:
    """A line per check appended to the notebook: its result, or ``rest`` (status, why)."""
    appended = {cell.metadata.get("workbook_check") for cell in run_nb.cells}
    for c in lab.checks:
        if c.id not in appended:  # a measurement this grading was not asked for
            continue
        status, hint = results.get(c.id, rest)
        report.checks.append(
            CheckResult(
                c.id, c.what, status, c.points if status == PASS else 0, c.points,
                c.required, c.public, hint,
            )
        )  # fmt: skip


def grade(
    notebook: str | os.PathLike[str],
    lab_id: str | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    executed_to: str | os.PathLike[str] | None = None,
    limits: Limits | None = None,
    sandbox_mode: str = "auto",
    name: str = "",
    hide: Sequence[str | os.PathLike[str]] = (),
    measure: bool = True,
    speed: float | None = None,
    repeats: int = 3,
) -> Report:
    """Grade one notebook; never raises for a bad submission (the report says what happened).

    ``executed_to``: where to save the executed notebook, check cells included (optional).
    ``limits``: memory, processes and CPU threads of its kernel (default: ``Limits()``).
    ``sandbox_mode``: "auto" (bubblewrap where it works), "bwrap" (required) or "none".
    ``hide``: more folders bubblewrap hides from the kernel; the notebook's own folder and
    the executed copy's are always hidden (other learners' work, the results).
    ``measure``: also run the measuring checks (Lab 1.2's speedrun: about 10 s of training
    on the full data); without it they are left out of the report. With it, a submission
    that passes is then timed ``repeats`` times in fresh kernels (``measure.measure``).
    ``speed``: how many times slower the machine is now than the one the checks' time limits
    were set on (default: ``speed_factor()``, measured now); each limit is scaled by it.
    """
    from workbook.notebooks import dumps

    start = time.monotonic()
    path = Path(notebook)
    kind = sandbox.choose(sandbox_mode)
    report = Report(notebook=str(notebook), lab=lab_id, name=name, sandbox=sandbox.describe(kind))
    try:
        nb = read_submission(path)
        lab = resolve_lab(nb, path.name, lab_id)
    except GradeInputError as exc:
        report.status, report.message = exc.status, str(exc)
        report.seconds = time.monotonic() - start
        return report
    report.lab, report.title = lab.id, lab.title
    speed = speed_factor() if speed is None else speed  # once: the checks' and the measurement's
    hidden = [Path(h) for h in hide] + [path.resolve().parent]
    if executed_to is not None:
        Path(executed_to).resolve().parent.mkdir(parents=True, exist_ok=True)
        hidden.append(Path(executed_to).resolve().parent)
    with tempfile.TemporaryDirectory(prefix="workbook-grade-") as tmp:
        # Only box/ is bound into the kernel's view; the log beside it stays the grader's.
        box = make_sandbox(Path(tmp) / "box")
        report.written = written_answers(nb, lab)
        box["log"] = Path(tmp) / "kernel.log"
        shutil.copyfile(path, box["cwd"] / lab.notebook)
        run_nb, numbers = _prepare(nb, lab, measure)
        _execute(run_nb, numbers, lab, box, timeout, report, limits or Limits(), kind, hidden,
                 speed)  # fmt: skip
        if executed_to is not None:
            atomic_write_text(Path(executed_to), dumps(run_nb))
    if measure and repeats:
        from workbook.grading import measure as measuring

        measuring.measure_reports([report], [path], repeats, limits, sandbox_mode, hide,
                                  speed)  # fmt: skip
    report.seconds = time.monotonic() - start
    return report


def grade_safely(notebook, lab_id=None, *args, **kwargs) -> Report:
    """:func:`grade`, with a failure of the grader itself (no kernel, a full disk) turned
    into a report, so one submission cannot lose the other 39 results."""
    try:
        return grade(notebook, lab_id, *args, **kwargs)
    except sandbox.SandboxUnavailable:
        raise  # the instructor asked for a sandbox this machine lacks: stop, do not grade
    except Exception as exc:
        return Report(
            str(notebook),
            lab_id,
            status="grader error",
            message=f"{type(exc).__name__}: {exc}",
            name=kwargs.get("name", ""),
        )


# --------------------------------------------------------------------------- batches


def batch_lab(notebooks: Sequence[str | os.PathLike[str]], lab_id: str | None) -> str | None:
    """The lab a whole batch is graded as: ``lab_id`` when given (a notebook claiming another
    lab is then reported as "wrong lab"), else the one lab its notebooks claim. Notebooks
    claiming different labs are refused (GradeInputError naming them), before any grading:
    a batch is one assignment, and "N of M pass" must count the same checks for all."""
    if lab_id is not None:
        return lab_id
    claims: dict[str, list[str]] = {}
    for notebook in notebooks:
        try:
            lab = detect_lab(read_submission(notebook), Path(notebook).name)
        except GradeInputError:
            continue  # reported as unreadable when graded
        if lab is not None:  # one that claims none is graded as the others' lab
            claims.setdefault(lab.id, []).append(Path(notebook).name)
    if len(claims) > 1:
        named = "; ".join(
            f"lab {lab}: {', '.join(names[:3])}"
            + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            for lab, names in sorted(claims.items())
        )
        raise GradeInputError(
            f"these notebooks claim different labs ({named}); grade one lab at a time, or "
            "pass --lab to grade them all as one"
        )
    return next(iter(claims), None)


def batch_names(notebooks: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Each notebook's name in a batch: its path relative to the folder they all share, so
    alice/lab.ipynb and bob/lab.ipynb keep their own rows and executed copies."""
    resolved = [Path(n).resolve() for n in notebooks]
    if not resolved:
        return []
    common = Path(os.path.commonpath([p.parent for p in resolved]))
    return [p.relative_to(common).as_posix() for p in resolved]


def grade_many(
    notebooks: Sequence[str | os.PathLike[str]],
    lab_id: str | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    jobs: int = 1,
    executed_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_report: Callable[[Report], None] | None = None,
    limits: Limits | None = None,
    sandbox_mode: str = "auto",
    measure: bool = True,
    repeats: int = 3,
    on_measured: Callable[[Report], None] | None = None,
) -> list[Report]:
    """Grade every notebook (``jobs`` at a time), in input order; one bad submission (a crash,
    a timeout, a grader error) becomes its own report and the batch goes on. Then, with
    ``measure``, the speedrun of each submission that passed is timed ``repeats`` times, one
    run at a time (``measure.measure_reports``; ``on_measured`` after each)."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from tqdm.auto import tqdm

    limits = given = limits or Limits()
    if limits.threads is None and jobs > 1:
        # Kernels side by side share the cores instead of each starting one thread per core
        # (oversubscribed, two kernels on 2 cores were slower than one at a time).
        limits = replace(limits, threads=max(1, (os.cpu_count() or 1) // jobs))
    if not notebooks:
        return []
    lab_id = batch_lab(notebooks, lab_id)
    names = batch_names(notebooks)
    # Every learner's folder and the results (made now, so there is a folder to hide) stay
    # out of every kernel's view.
    hide = [Path(os.path.commonpath([Path(n).resolve().parent for n in notebooks]))]
    if executed_dir is not None:
        Path(executed_dir).mkdir(parents=True, exist_ok=True)
        hide += [Path(executed_dir).resolve(), Path(executed_dir).resolve().parent]

    speed = speed_factor()  # once, before the batch's kernels load the machine themselves

    def one(item) -> Report:
        nb_path, name = item
        executed = None if executed_dir is None else Path(executed_dir) / name
        return grade_safely(
            nb_path, lab_id, timeout, executed, limits, sandbox_mode, name=name, hide=hide,
            measure=measure, speed=speed, repeats=0,  # measured below, one at a time
        )  # fmt: skip

    reports: list[Report] = []
    with (
        ThreadPoolExecutor(max_workers=max(1, jobs)) as pool,
        tqdm(
            total=len(notebooks), desc="grading", unit="nb", disable=tqdm_disable(progress)
        ) as bar,
    ):
        for report in pool.map(one, zip(notebooks, names, strict=True)):
            reports.append(report)
            bar.update()
            bar.set_postfix_str(f"{report.label}: {report.score}/{report.max_score}")
            if on_report:
                on_report(report)
    if measure and repeats:
        from workbook.grading import measure as measuring

        measuring.measure_reports(reports, notebooks, repeats, given,  # the cores, alone
                                  sandbox_mode, hide, speed, on_measured)  # fmt: skip
    return reports
