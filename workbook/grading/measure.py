"""The speedrun's measurement (Lab 1.2's leaderboard), taken apart from the grading.

Grading runs every submission's cells, kernels side by side (``--jobs``), and the speedrun
check there only says whether SpeedNet trains (90 % after its epochs). Its time would be
unfair twice over: kernels sharing the cores slow each other (identical nets ranged from
21 s to 40 s with two jobs), and by the time the check runs, the learner's earlier cells
have had the whole kernel to prepare in, the test split included. So after the batch, each
submission that passed every required check and the speedrun check is measured again, one
at a time, ``repeats`` times, each run in a fresh sandboxed kernel that holds only:

1. the grader's copy of the checks, and the data, loaded; the test files are then deleted
   from that kernel's throw-away copy of the data;
2. the learner's code that defines ``SpeedNet`` and ``speedrun_recipe`` and nothing else:
   the submission's top-level statements they need, found by following names back through
   the notebook (``program_slice``), run on the clock;
3. ``checks.speedrun_record``: the clock goes on while ``SpeedNet()`` is built and trained
   until the test accuracy (read every eighth of an epoch, the clock paused) reaches 99.0 %.

The leaderboard ranks the median of the runs and shows their spread. The learner's code
still runs in the measuring process, so a determined learner could tamper with the clock:
the leaderboard is a game, and an instructor can rerun a winner.
"""

from __future__ import annotations

import ast
import json
import statistics
import symtable
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat

from workbook.grading import grade, sandbox
from workbook.grading.gradebook import PASS, Report
from workbook.grading.sandbox import Limits

#: What the speedrun check needs from the submission.
TARGETS = ("SpeedNet", "speedrun_recipe")
#: Seconds one measuring run may take (kernel start and data load included), before the
#: machine's speed factor.
RUN_TIMEOUT = 300
DEFAULT_REPEATS = 3


class MeasureError(Exception):
    """The submission's speedrun could not be measured; the message says why."""


# --------------------------------------------------------------------------- the slice

#: Cell magics whose body is Python run at once (the slice reads the body).
_BODY_MAGICS = ("%%time", "%%timeit", "%%capture")
#: symtable's names for comprehension scopes, which run where they stand.
_COMPREHENSIONS = {"listcomp", "setcomp", "dictcomp", "genexpr"}


def _statements(nb: nbformat.NotebookNode) -> list[ast.stmt]:
    """Every top-level statement of the notebook's code cells, in order (IPython's syntax,
    magics included, turned into Python first; the body of a %%time or %%capture cell is
    read as Python; a cell that is not Python is skipped)."""
    from IPython.core.inputtransformer2 import TransformerManager

    manager = TransformerManager()
    out: list[ast.stmt] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = cell.source
        first, _, body = source.partition("\n")
        if first.split()[:1] and first.split()[0] in _BODY_MAGICS:
            source = body
        try:
            tree = ast.parse(manager.transform_cell(source))
            symtable.symtable(ast.unparse(tree), "<cell>", "exec")  # what _uses will read
        except (SyntaxError, ValueError):
            continue
        out += tree.body
    return out


def _binds(stmt: ast.stmt) -> tuple[set[str], bool]:
    """The module-level names a statement binds (not inside its functions, classes or
    comprehensions), and whether it surely does: False for one inside an if, a loop, a
    try or a with, which may leave an earlier binding in place."""
    names: set[str] = set()
    sure = isinstance(
        stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom
        | ast.Assign | ast.AnnAssign | ast.AugAssign,
    )  # fmt: skip
    todo: list[ast.AST] = [stmt]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            continue
        if isinstance(node, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp
                      | ast.GeneratorExp):  # fmt: skip
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return names, sure


def _changes(stmt: ast.stmt) -> set[str]:
    """Names a statement changes without binding them: ``recipe["lr"] = 0.01``,
    ``SpeedNet.width = 64``, ``recipe.update(...)``, ``del recipe["x"]``."""
    names: set[str] = set()
    targets: list[ast.AST] = []
    if isinstance(stmt, ast.Assign | ast.Delete):
        targets = list(stmt.targets)
    elif isinstance(stmt, ast.AugAssign | ast.AnnAssign):
        targets = [stmt.target]
    elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        targets = [stmt.value.func]  # recipe.update(...): the object the method is called on
    for target in targets:
        while isinstance(target, ast.Subscript | ast.Attribute):
            target = target.value
            if isinstance(target, ast.Name):
                names.add(target.id)
    return names


def _uses(stmt: ast.stmt) -> tuple[set[str], set[str]]:
    """The module-level names a statement reads: (now, as it runs; later, when a function
    it defines is called: a method's ``F.relu`` is looked up when SpeedNet is built, so
    from the end of the notebook)."""
    table = symtable.symtable(ast.unparse(stmt), "<slice>", "exec")
    now, later = set(), set()
    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
        now.add(stmt.target.id)  # x += 1 reads x
    todo = [(table, "top")]
    while todo:
        scope, when = todo.pop()
        for sym in scope.get_symbols():
            if sym.is_referenced() and (when == "top" or sym.is_global()):
                (later if when == "later" else now).add(sym.get_name())
        for child in scope.get_children():
            deferred = child.get_type() == "function" and child.get_name() not in _COMPREHENSIONS
            todo.append((child, "later" if when == "later" or deferred else "now"))
    return now, later


def program_slice(nb: nbformat.NotebookNode, targets: Sequence[str] = TARGETS) -> str:
    """The source of the submission's top-level statements that ``targets`` need: for each
    needed name, the statement that last bound it before it is read (and earlier ones when
    that binding is conditional), every statement that changed it in between
    (``recipe["lr"] = ...``), and, in turn, the names those statements read; a name read
    inside a function or a method is looked up from the end of the notebook, where
    SpeedNet is built. Star imports are always kept. What defines SpeedNet comes with its
    imports and helpers, and none of the rest (the loading of the data, the other
    exercises). MeasureError when a target is never bound."""
    statements = _statements(nb)
    end = len(statements)
    kept = {i for i, s in enumerate(statements)
            if isinstance(s, ast.ImportFrom) and any(a.name == "*" for a in s.names)}  # fmt: skip
    todo = [(name, end) for name in targets]
    seen: set[tuple[str, int]] = set()
    found: set[str] = set()
    while todo:
        name, before = todo.pop()
        if (name, before) in seen:
            continue
        seen.add((name, before))
        for i in range(before - 1, -1, -1):
            binds, sure = _binds(statements[i])
            if name not in binds and name not in _changes(statements[i]):
                continue
            if i not in kept:
                kept.add(i)
                now, later = _uses(statements[i])
                todo += [(n, i) for n in now] + [(n, end) for n in later]
            if name in binds:
                found.add(name)
                if sure:
                    break
    missing = [t for t in targets if t not in found]
    if missing:
        raise MeasureError(f"{' and '.join(missing)} never defined at the top of a cell")
    return "\n".join(ast.unparse(statements[i]) for i in sorted(kept)) + "\n"


# --------------------------------------------------------------------------- one run

#: Before the learner's code: the data, and the grader's own check function, taken now, so
#: a submission that replaces ``checks.speedrun_record`` does not replace the measurement.
_DATA = (
    "import sys as __wb_sys\n"
    "__wb_record = __wb_sys.modules['shared.checks'].speedrun_record\n"
    "__wb_splits = __wb_sys.modules['shared.checks'].speedrun_data()"
)
_MEASURE = "__wb_record(SpeedNet, speedrun_recipe, __wb_splits)"
#: The prefix of the measurement's own names, which no learner code may touch.
_OWN = "__wb_"


def _one_run(code: str, limits: Limits, kind: str, hide: Sequence[Path], speed: float) -> dict:
    """One measurement in a fresh sandbox and kernel: its figures, the seconds the learner's
    code took to define SpeedNet added to the time to 99 %. MeasureError says what failed."""
    from nbclient.exceptions import DeadKernelError

    cells = [grade._loader_cell(suite=False), nbformat.v4.new_code_cell(_DATA),
             nbformat.v4.new_code_cell(code), nbformat.v4.new_code_cell(_MEASURE)]  # fmt: skip
    nb = nbformat.v4.new_notebook(cells=cells)
    deadline = time.monotonic() + RUN_TIMEOUT * speed
    with tempfile.TemporaryDirectory(prefix="workbook-measure-") as tmp:
        box = grade.make_sandbox(Path(tmp) / "box")
        box["log"] = Path(tmp) / "kernel.log"
        cgroup = sandbox.Cgroup.create(limits)
        try:
            client = grade._client_class()(
                nb, km=grade.kernel_manager(box, kind, limits, cgroup, hide), allow_errors=True,
                interrupt_on_timeout=True, shutdown_kernel="immediate", startup_timeout=120,
                error_on_timeout={"ename": "Timeout", "evalue": "", "traceback": []},
            )  # fmt: skip
            with (
                open(box["log"], "w") as log,
                client.setup_kernel(
                    cleanup_kc=True,
                    env=grade.kernel_env(box, limits.threads),
                    cwd=str(box["cwd"]),
                    stdout=log,
                    stderr=log,
                ),  # fmt: skip
            ):
                learner = 0.0
                for index, cell in enumerate(nb.cells):
                    start = time.perf_counter()
                    reply = grade._run_cell(client, cell, index, deadline - time.monotonic())
                    if index == 2:  # the learner's definitions: on the clock
                        learner = time.perf_counter() - start
                    if reply.get("ename") == "Timeout":
                        raise MeasureError(f"ran past {RUN_TIMEOUT * speed:.0f} s")
                    if reply.get("status") == "error":
                        who = "your code defining SpeedNet" if index == 2 else "the measurement"
                        raise MeasureError(f"{who} raised {grade._last_line(reply)}"
                                           + _why(reply, index))  # fmt: skip
        except DeadKernelError:
            raise MeasureError("the kernel died during the measurement") from None
        finally:
            if cgroup is not None:
                cgroup.kill_all()
                cgroup.remove()
    value = next((o for o in nb.cells[-1].outputs if o.get("output_type") == "execute_result"),
                 None)  # fmt: skip
    try:
        record = json.loads(ast.literal_eval(value["data"]["text/plain"]))
    except (TypeError, KeyError, ValueError, SyntaxError):
        raise MeasureError("the measurement returned no figures") from None
    if record["seconds_to_99"] is not None:
        record["seconds_to_99"] += learner
    record["definition_seconds"] = learner
    return record


def _why(reply: dict, index: int) -> str:
    """What a learner needs to know about their definitions' error, where it is the
    measurement's own doing: its copy of the data has no test files."""
    if index == 2 and "t10k" in str(reply.get("evalue", "")):  # FileNotFoundError or ours
        return (
            " (the measurement runs only the code SpeedNet and speedrun_recipe need, on a "
            "copy of the data without the test files, and that code loads the data: write "
            "the numbers SpeedNet needs into its code)"
        )
    return ""


# --------------------------------------------------------------------------- a report


def measure(
    notebook: str | Path,
    repeats: int = DEFAULT_REPEATS,
    limits: Limits | None = None,
    sandbox_mode: str = "auto",
    hide: Sequence[str | Path] = (),
    speed: float = 1.0,
) -> dict[str, Any]:
    """``repeats`` fresh runs of a submission's speedrun, one after another: the figures the
    leaderboard reads ({"seconds_to_99": the median (None when the median run did not reach
    99 %), "runs": each run's time, "final_accuracy", "epochs_to_99", "full_data": True}),
    or {"error": why} when it could not be measured."""
    kind = sandbox.choose(sandbox_mode)
    limits = limits or Limits()
    hide = [*hide, Path(notebook).resolve().parent]  # other learners' work
    try:
        code = program_slice(grade.read_submission(notebook))
        if _OWN in code:
            raise MeasureError(f"your code defining SpeedNet names the measurement's {_OWN}*")
        records = [
            _one_run(code, limits, kind, [Path(h) for h in hide], speed) for _ in range(repeats)
        ]
    except (MeasureError, grade.GradeInputError) as exc:
        return {"error": str(exc)}
    runs = [r["seconds_to_99"] for r in records]
    median = statistics.median(float("inf") if t is None else t for t in runs)
    last = records[-1]
    return {
        "seconds_to_99": None if median == float("inf") else median,
        "runs": runs,
        "epochs_to_99": last["epochs_to_99"],
        "final_accuracy": last["final_accuracy"],
        "full_data": True,
    }


def measurable(report: Report) -> bool:
    """Only a submission that passed every required check and the speedrun check itself is
    measured (and so ranked)."""
    return report.passed and any(c.id == "speedrun" and c.status == PASS for c in report.checks)


def measure_reports(
    reports: Sequence[Report],
    notebooks: Sequence[str | Path],
    repeats: int = DEFAULT_REPEATS,
    limits: Limits | None = None,
    sandbox_mode: str = "auto",
    hide: Sequence[str | Path] = (),
    speed: float = 1.0,
    on_report=None,
) -> None:
    """Measure, one at a time, each measurable report's submission (``notebooks`` in the
    same order), into its ``measurements["speedrun"]``; ``on_report`` after each."""
    for report, notebook in zip(reports, notebooks, strict=True):
        if not measurable(report):
            continue
        report.measurements["speedrun"] = measure(
            notebook, repeats, limits, sandbox_mode, hide, speed
        )
        if on_report is not None:
            on_report(report)
