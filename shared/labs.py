"""Learner labs generated from the solution notebooks (the single source).

In a solution notebook, the code a learner writes sits between two marker lines::

    ### BEGIN SOLUTION (define forward(): flatten, hidden layer, ReLU, 10 outputs)
    ...the solution...
    ### END SOLUTION

``build_lab`` replaces each region with a stub at the same indentation::

    # YOUR CODE HERE: define forward(): flatten, hidden layer, ReLU, 10 outputs
    raise NotImplementedError("define forward(): flatten, hidden layer, ReLU, 10 outputs")

and clears outputs, so the lab never shows a solution's results either. ``check`` rebuilds
every lab in memory and reports any difference from the committed ``labs/`` (drift or a
hand edit) and any marker or solution text that would leak.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from shared import notebooks

BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?:\s*\((?P<hint>.*)\))?\s*$")
END = re.compile(r"^[ \t]*### END SOLUTION\s*$")
DEFAULT_HINT = "write this part"


class MarkerError(ValueError):
    """Unbalanced or nested solution markers; the message names the notebook and cell."""


def stub_source(source: str, where: str = "") -> tuple[str, int]:
    """Replace each solution region in ``source``; returns the new source and region count."""
    out: list[str] = []
    inside, hint, indent, count = False, "", "", 0
    for lineno, line in enumerate(source.splitlines(), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if inside:
                raise MarkerError(f"{where} line {lineno}: BEGIN SOLUTION inside another region")
            inside, indent = True, begin["indent"]
            hint = (begin["hint"] or DEFAULT_HINT).strip()
            count += 1
        elif end:
            if not inside:
                raise MarkerError(f"{where} line {lineno}: END SOLUTION without BEGIN")
            inside = False
            out.append(f"{indent}# YOUR CODE HERE: {hint}")
            out.append(f"{indent}raise NotImplementedError({hint!r})")
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: BEGIN SOLUTION without END")
    return "\n".join(out), count


def build_lab(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The learner version of a solution notebook: regions stubbed, outputs cleared."""
    lab = copy.deepcopy(solution)
    for i, cell in enumerate(lab.cells):
        if cell.cell_type != "code":
            continue
        cell.source, _ = stub_source(cell.source, f"{name} cell {i}")
        cell.outputs = []
        cell.execution_count = None
    return notebooks.clean(lab)


@dataclass
class Problem:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def solution_files(solutions_dir: Path) -> list[Path]:
    return sorted(solutions_dir.glob("[0-9][0-9]_*.ipynb"))


def build(solutions_dir: Path, labs_dir: Path, write: bool = True) -> list[Problem]:
    """Generate every lab; with ``write=False`` only compare (what ``check`` does)."""
    from shared.io import atomic_write_text

    problems: list[Problem] = []
    expected_names = set()
    for sol_path in solution_files(solutions_dir):
        expected_names.add(sol_path.name)
        solution = nbformat.read(sol_path, as_version=4)
        try:
            text = notebooks.dumps(build_lab(solution, sol_path.name))
        except MarkerError as exc:
            problems.append(Problem(sol_path, str(exc)))
            continue
        if "BEGIN SOLUTION" in text or "END SOLUTION" in text:
            problems.append(Problem(sol_path, "solution marker left in the generated lab"))
        lab_path = labs_dir / sol_path.name
        if write:
            if not lab_path.is_file() or lab_path.read_text(encoding="utf-8") != text:
                atomic_write_text(lab_path, text)
        elif not lab_path.is_file():
            problems.append(Problem(lab_path, "missing; run `workbook labs build`"))
        elif lab_path.read_text(encoding="utf-8") != text:
            problems.append(
                Problem(
                    lab_path, "differs from what its solution generates; run `workbook labs build`"
                )
            )
    for lab_path in sorted(labs_dir.glob("*.ipynb")):
        if lab_path.name not in expected_names:
            problems.append(Problem(lab_path, "has no solution notebook of the same name"))
    return problems
