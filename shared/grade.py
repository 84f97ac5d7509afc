"""Grade learner notebooks: run each in a sandbox, then run its lab's check suite in the same
kernel (``workbook grade``).

One submission:

1. read and validate the notebook; find its lab (first heading, else file name, or --lab);
2. copy it into a fresh temporary project (configs and MNIST copied, never linked, so a
   submission cannot reach the checkout through them) with the write guard on;
3. inject the lab's grading parameters (papermill) and run the cells in order (nbclient).
   A failing self-check or an unwritten stub does not stop the run, so every exercise is
   graded on its own; any other error stops it, and checks whose variables were never
   defined are reported as *not run*. Past the time budget the cell is interrupted; a
   kernel that does not answer is killed. Output beyond a cap is dropped;
4. run one appended cell per check (``shared.suites.run_in_kernel``) in that kernel.

The sandbox is deleted afterwards; nothing outside it changes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat

from shared import paths
from shared.gradebook import FAIL, NOT_RUN, PASS, CheckResult, ExecutionError, Report
from shared.guard import ROOTS_ENV, SITECUSTOMIZE
from shared.notebooks import KERNEL_NAME
from shared.suites import LABS, Lab

#: Errors that mark an exercise as wrong or unwritten, not the notebook as broken: execution
#: goes on, so later exercises are still graded.
EXERCISE_ERRORS = ("CheckFailed", "NotImplementedError")
#: Bytes of cell output kept per submission (stdout, images, ...); the rest is dropped.
OUTPUT_CAP = 2_000_000
#: Seconds an interrupted kernel gets to answer before it is killed.
INTERRUPT_GRACE = 10
DEFAULT_TIMEOUT = 300
CHECK_TAG = "workbook-grade-check"


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
        if filename == lab.notebook or filename.startswith(lab.notebook[:3]):
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


# --------------------------------------------------------------------------- sandbox


def make_sandbox(root: Path, source: Path | None = None) -> dict[str, Path]:
    """A throw-away project under ``root``: configs and MNIST copied from ``source`` (the
    project root), empty dags/, labs/ as the working folder, its own home and temp."""
    source = source or paths.project_root()
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
    for d in ("home", "tmp", "guard"):
        (root / d).mkdir()
    (root / "guard" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"root": root, "project": project, "cwd": project / "labs"}


def kernel_env(box: dict[str, Path], threads: int | None = None) -> dict[str, str]:
    """The kernel's environment: every path it writes to points into the sandbox; with
    ``threads``, torch's CPU thread pool is capped (kernels grading side by side)."""
    root, project = box["root"], box["project"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    pythonpath = [str(root / "guard"), env.get("PYTHONPATH", "")]
    env.update(
        {
            paths.ROOT_ENV: str(project),
            ROOTS_ENV: str(root),
            "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p),
            "PYTHONDONTWRITEBYTECODE": "1",  # no .pyc writes into site-packages
            "HOME": str(root / "home"),
            "TMPDIR": str(root / "tmp"),
            "MPLCONFIGDIR": str(root / "home" / ".matplotlib"),
            "IPYTHONDIR": str(root / "home" / ".ipython"),
            "AIRFLOW_HOME": str(project / ".airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{project / '.airflow' / 'airflow.db'}",
        }
    )
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


# --------------------------------------------------------------------------- execution


def _output_size(content: dict[str, Any]) -> int:
    if "text" in content:
        return len(content["text"])
    return sum(len(str(v)) for v in content.get("data", {}).values())


def _client_class():
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        """nbclient that keeps at most OUTPUT_CAP bytes of output and records each reply."""

        def __init__(self, nb, **kw):
            super().__init__(nb, **kw)
            self.used, self.truncated, self.replies = 0, False, {}
            self.on_cell_executed = self._record

        def _record(self, cell, cell_index, execute_reply):
            self.replies[cell_index] = (execute_reply or {}).get("content", {})

        def output(self, outs, msg, display_id, cell_index):
            if msg["msg_type"] != "error":
                self.used += _output_size(msg["content"])
                if self.used > OUTPUT_CAP:
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
    value = str(content.get("evalue", "")).strip()
    value = value.splitlines()[-1] if value else ""
    return f"{content.get('ename', 'Error')}: {value}"[:300].rstrip(": ")


def _check_cell(lab: Lab, check_id: str) -> nbformat.NotebookNode:
    # Fresh copies of the check modules, so a notebook that reassigned a check function
    # (checks.train_loop = lambda f: None) is graded by the real one.
    source = (
        "import importlib as __workbook_importlib\n"
        "import shared.checks as __workbook_checks\n"
        "__workbook_importlib.reload(__workbook_checks)\n"
        "import shared.suites as __workbook_suites\n"
        "__workbook_importlib.reload(__workbook_suites).run_in_kernel(\n"
        f"    globals(), {lab.id!r}, {check_id!r}\n"
        ")"
    )
    return nbformat.v4.new_code_cell(
        source, metadata={"tags": [CHECK_TAG], "workbook_check": check_id}
    )


def _prepare(nb: nbformat.NotebookNode, lab: Lab) -> tuple[nbformat.NotebookNode, list[int]]:
    """The notebook to execute (parameters injected, check cells appended) and, per cell
    of the submission, its number as the learner counts it (1 = the top cell)."""
    import copy

    from papermill.parameterize import parameterize_notebook

    run = copy.deepcopy(nb)  # papermill edits the notebook it is given
    for i, cell in enumerate(run.cells, 1):
        cell.metadata["workbook_cell"] = i
        cell.metadata.setdefault("tags", [])  # papermill reads every cell's tags
    run.metadata.setdefault("papermill", {})
    run = parameterize_notebook(run, lab.parameters, kernel_name=KERNEL_NAME, language="python")
    numbers, last = [], 0
    for cell in run.cells:  # the injected cell counts as the parameters cell it follows
        last = cell.metadata.pop("workbook_cell", last)
        numbers.append(last)
    run.cells.extend(_check_cell(lab, c.id) for c in lab.checks)
    return run, numbers


def _classify(content: dict[str, Any], what: str) -> tuple[str, str]:
    """(status, hint) from a check cell's reply."""
    if content.get("status") != "error":
        return PASS, ""
    message = str(content.get("evalue", "")).strip()
    if content.get("ename") == "CheckNotRun":
        return NOT_RUN, message
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
            stop = reply.get("ename") not in EXERCISE_ERRORS
            report.errors.append(ExecutionError(numbers[index], _last_line(reply), stop))
            if stop:
                return


def _run_checks(client, run_nb, lab: Lab) -> tuple[dict[str, tuple[str, str]], str]:
    """The appended check cells: {check id: (status, hint)}, and why the rest did not run."""
    results: dict[str, tuple[str, str]] = {}
    for index, cell in enumerate(run_nb.cells):
        if CHECK_TAG not in cell.metadata.get("tags", []):
            continue
        check = lab.check(cell.metadata["workbook_check"])
        reply = _run_cell(client, cell, index, check.timeout)
        if reply.get("ename") == "Timeout":
            results[check.id] = (FAIL, f"the check timed out after {check.timeout} s")
            return results, "an earlier check timed out"
        results[check.id] = _classify(reply, check.what)
    return results, ""


def _execute(run_nb, numbers, lab: Lab, box, timeout: int, report: Report, threads=None) -> None:
    """Run the submission's cells, then the check cells, filling ``report``."""
    from nbclient.exceptions import DeadKernelError

    client = _client_class()(
        run_nb,
        kernel_name=KERNEL_NAME,
        allow_errors=True,  # the grader decides which errors stop the run
        interrupt_on_timeout=True,  # past its time a cell is interrupted, like the ■ button
        error_on_timeout={"ename": "Timeout", "evalue": "", "traceback": []},
        shutdown_kernel="immediate",
        startup_timeout=120,
    )
    results: dict[str, tuple[str, str]] = {}
    reason = ""
    try:
        # The kernel's own stderr (jupyter warnings, a crash's last words) goes to a log; a
        # dead kernel's report quotes its last line.
        with (
            open(box["root"] / "kernel.log", "w") as log,
            client.setup_kernel(env=kernel_env(box, threads), cwd=str(box["cwd"]), stderr=log),
        ):
            _run_submission(client, run_nb, numbers, timeout, report)
            if report.status == "timeout" and not _kernel_answers(client, run_nb):
                reason = f"the kernel ignored the interrupt at {timeout} s and was killed"
                report.message = reason
            elif report.status == "timeout":
                report.message = f"interrupted after {timeout} s; the checks ran on what it defined"
            if not reason:
                results, reason = _run_checks(client, run_nb, lab)
    except DeadKernelError:
        report.status = "kernel died"
        log = (box["root"] / "kernel.log").read_text(errors="replace").strip().splitlines()
        last = [line for line in log if "running over TCP" not in line][-1:]
        reason = "the kernel died (out of memory, a crash, or the notebook exited it)"
        report.message = reason + (f"; its last words: {last[0][:200]}" if last else "")
    report.output_truncated = client.truncated
    for c in lab.checks:
        status, hint = results.get(c.id, (NOT_RUN, reason))
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
    threads: int | None = None,
) -> Report:
    """Grade one notebook; never raises for a bad submission (the report says what happened).

    ``executed_to``: where to save the executed notebook, check cells included (optional).
    ``threads``: cap on the kernel's CPU threads (None: torch's default, every core).
    """
    from shared.io import atomic_write_text
    from shared.notebooks import dumps

    start = time.monotonic()
    path = Path(notebook)
    report = Report(notebook=str(notebook), lab=lab_id)
    try:
        nb = read_submission(path)
        lab = resolve_lab(nb, path.name, lab_id)
    except GradeInputError as exc:
        report.status, report.message = exc.status, str(exc)
        report.seconds = time.monotonic() - start
        return report
    report.lab, report.title = lab.id, lab.title
    with tempfile.TemporaryDirectory(prefix="workbook-grade-") as tmp:
        box = make_sandbox(Path(tmp))
        shutil.copyfile(path, box["cwd"] / lab.notebook)
        run_nb, numbers = _prepare(nb, lab)
        _execute(run_nb, numbers, lab, box, timeout, report, threads)
        if executed_to is not None:
            atomic_write_text(Path(executed_to), dumps(run_nb))
    report.seconds = time.monotonic() - start
    return report


def grade_safely(
    notebook, lab_id=None, timeout=DEFAULT_TIMEOUT, executed_to=None, threads=None
) -> Report:
    """:func:`grade`, with a failure of the grader itself (no kernel, a full disk) turned
    into a report, so one submission cannot lose the other 39 results."""
    try:
        return grade(notebook, lab_id, timeout, executed_to, threads)
    except Exception as exc:
        return Report(
            str(notebook), lab_id, status="grader error", message=f"{type(exc).__name__}: {exc}"
        )


# --------------------------------------------------------------------------- batches


def grade_many(
    notebooks: Sequence[str | os.PathLike[str]],
    lab_id: str | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    jobs: int = 1,
    executed_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_report: Callable[[Report], None] | None = None,
) -> list[Report]:
    """Grade every notebook (``jobs`` at a time), in input order; one bad submission (a crash,
    a timeout, a grader error) becomes its own report and the batch goes on."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    # Kernels side by side share the cores instead of each starting one thread per core
    # (oversubscribed, two kernels on 2 cores were slower than one at a time).
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def one(nb_path) -> Report:
        executed = None if executed_dir is None else Path(executed_dir) / Path(nb_path).name
        return grade_safely(nb_path, lab_id, timeout, executed, threads)

    reports: list[Report] = []
    with (
        ThreadPoolExecutor(max_workers=max(1, jobs)) as pool,
        tqdm(total=len(notebooks), desc="grading", unit="nb", disable=not progress) as bar,
    ):
        for report in pool.map(one, notebooks):
            reports.append(report)
            bar.update()
            bar.set_postfix_str(f"{Path(report.notebook).name}: {report.score}/{report.max_score}")
            if on_report:
                on_report(report)
    return reports
